"""A token's role: every statement of its requests runs as that PostgreSQL role (SET LOCAL ROLE in each
transaction), so the database's GRANTs and row-level security decide what it reads. A role the service's
login cannot assume is a 403 JSON before any byte; no role stays on a connection for the next request.

The service logs in as a role of its own, not a superuser (tests/support/grants.py)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from streaming_api.web.keys import POOL
from tests.support import grants
from tests.support.running import running

ROLE_FORMATS = grants.ALL_FORMATS


async def _get(client, path: str, token: str) -> tuple[int, bytes]:
    async with client.get(path, headers=grants.auth(token)) as response:
        return response.status, await response.read()


@pytest.mark.parametrize("fmt", ROLE_FORMATS)
@pytest.mark.parametrize("path", ["/standard/points", "/chunked/points", "/chunked/points?snapshot=off"])
async def test_a_role_reads_exactly_the_rows_its_policy_shows(grants_client, mint, path, fmt):
    separator = "&" if "?" in path else "?"
    status, body = await _get(grants_client, f"{path}{separator}format={fmt}&page_size=100", mint(role=grants.ANALYST))
    if path.startswith("/standard"):
        status, body = await _get(grants_client, f"{path}?format={fmt}", mint(role=grants.ANALYST))
    assert status == 200, body[:300]
    assert grants.ids_of(fmt, body) == grants.ANALYST_IDS


async def test_without_a_role_the_login_reads_every_row(grants_client, mint):
    status, body = await _get(grants_client, "/chunked/points?format=csv", mint())
    assert status == 200
    assert grants.ids_of("csv", body) == list(range(1, grants.ROWS + 1))


async def test_a_role_name_is_read_as_one_quoted_identifier(grants_client, mint):
    status, body = await _get(grants_client, "/chunked/points?format=ndjson", mint(role=grants.ODD_ROLE))
    assert status == 200
    assert grants.ids_of("ndjson", body) == grants.ODD_ROLE_IDS


@pytest.mark.parametrize(
    "role",
    [grants.OUTSIDER, "no_such_role", 'x"; DROP TABLE points; --', "grants_analyst; RESET ROLE", "public", "NONE"],
)
@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_role_the_login_cannot_assume_is_a_403_before_any_byte(grants_client, grants_url, mint, role, method):
    async with grants_client.request(method, "/chunked/points", headers=grants.auth(mint(role=role))) as response:
        assert response.status == 403
        assert response.content_type == "application/json"
        if method == "GET":
            body = await response.json()
            assert body["error"] == "role_refused"
            assert body["role"] == role
    conn = await asyncpg.connect(grants_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM points") == grants.ROWS
    finally:
        await conn.close()


@pytest.mark.parametrize("path", ["/chunked/notes", "/standard/notes", "/chunked/notes?snapshot=off"])
async def test_a_table_the_roles_grants_do_not_cover_is_a_403(grants_client, mint, path):
    response = await grants_client.get(path, headers=grants.auth(mint(role=grants.ANALYST)))
    assert response.status == 403
    body = await response.json()
    assert body["error"] == "role_may_not_read"
    assert "permission denied" in body["detail"]


async def test_a_role_claim_of_none_is_a_401_not_the_logins_own_rights(grants_client, mint):
    """SET ROLE takes 'none', quoted or not, as "the login's own role": a token never gets that."""
    response = await grants_client.get("/chunked/points", headers=grants.auth(mint(role="none")))
    assert response.status == 401
    assert "role claim" in (await response.json())["detail"]


async def test_head_under_a_role_counts_what_the_role_sees(grants_client, mint):
    response = await grants_client.head("/standard/points", headers=grants.auth(mint(role=grants.ANALYST)))
    assert response.status == 200
    assert response.headers["X-Row-Count"] == str(len(grants.ANALYST_IDS))


async def test_chunked_under_a_role_announces_no_row_count(grants_client, mint):
    """The catalog's figures are the whole table's: a role's export says nothing it cannot know at once."""
    async with grants_client.get(
        "/chunked/points?limit=10", headers=grants.auth(mint(role=grants.ANALYST))
    ) as response:
        assert response.status == 200
        assert "X-Row-Count" not in response.headers and "X-Row-Count-Estimate" not in response.headers
    async with grants_client.get("/chunked/points?limit=10", headers=grants.auth(mint())) as response:
        assert "X-Row-Count" in response.headers or "X-Row-Count-Estimate" in response.headers


async def test_tables_leaves_the_tables_row_estimates_out_for_a_role(grants_client, mint):
    listing = await (await grants_client.get("/tables", headers=grants.auth(mint(role=grants.ANALYST)))).json()
    assert {table["rows_estimate"] for table in listing["tables"]} == {None}
    listing = await (await grants_client.get("/tables", headers=grants.auth(mint()))).json()
    assert {table["name"]: table["rows_estimate"] for table in listing["tables"]}["points"] == grants.ROWS


async def test_a_resume_under_a_role_continues_in_its_snapshot(grants_client, mint):
    token = mint(role=grants.ANALYST)
    async with grants_client.get("/chunked/points?format=csv&limit=100", headers=grants.auth(token)) as first:
        assert first.status == 200
        head = grants.ids_of("csv", await first.read())
        snapshot = first.headers["X-Snapshot"]
    status, rest = await _get(grants_client, f"/chunked/points?format=csv&after={head[-1]}&snapshot={snapshot}", token)
    assert status == 200
    assert head + grants.ids_of("csv", rest) == grants.ANALYST_IDS


async def test_no_role_stays_on_a_connection_for_the_next_request(grants_settings, mint):
    """One pool connection, one snapshot holder: role requests that end whole, cut, or refused, then requests
    without a role, which must read every row, on connections whose current_user is the login again."""
    one = grants_settings.replace(pool_min_size=1, pool_max_size=1, max_snapshots=1, snapshot_grace=0)
    analyst = grants.auth(mint(role=grants.ANALYST))
    async with running(one) as server:
        for path in ("/chunked/points?page_size=50", "/chunked/points?snapshot=off", "/standard/points"):
            async with server.session.get(f"{server.url}{path}", headers=analyst) as response:
                assert response.status == 200
                await response.read()
        # Cut after the first chunk, mid-export.
        for path in ("/chunked/points?page_size=10", "/chunked/points?page_size=10&snapshot=off"):
            async with server.session.get(f"{server.url}{path}", headers=analyst) as response:
                await response.content.readany()
                response.close()
        refused = await server.session.get(f"{server.url}/chunked/notes", headers=analyst)
        assert refused.status == 403
        for path in ("/chunked/points?format=csv", "/chunked/points?format=csv&snapshot=off", "/standard/points.csv"):
            async with server.session.get(f"{server.url}{path}", headers=grants.auth(mint())) as response:
                assert grants.ids_of("csv", await response.read()) == list(range(1, grants.ROWS + 1)), path
        await asyncio.sleep(0)
        async with server.app[POOL].acquire() as conn:
            assert await conn.fetchval("SELECT current_user") == grants.LOGIN
