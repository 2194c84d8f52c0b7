"""Grants per token: a `tables` claim (patterns like the tables setting) or the default_grant setting says
which served tables a token reads. Served but not granted is a 403 JSON; not served, a 404 whatever the
grant. It holds on every way to a table: /chunked, /standard, HEAD, suffix URLs, the bare endpoint, GET
/tables and /openapi.json (which list only what the token may read)."""

from __future__ import annotations

import pytest

from streaming_api.web.app import create_app
from tests.support import grants


async def _status(client, path: str, token: str, method: str = "GET") -> int:
    async with client.request(method, path, headers=grants.auth(token)) as response:
        await response.read()
        return response.status


async def test_a_token_without_a_tables_claim_reads_every_served_table(grants_client, mint):
    token = mint()
    for path in ("/chunked/points?limit=1", "/chunked/notes?limit=1", "/chunked/audit.events?limit=1"):
        assert await _status(grants_client, path, token) == 200, path


async def test_a_table_served_but_not_granted_is_a_403_naming_it(grants_client, mint):
    response = await grants_client.get("/chunked/points", headers=grants.auth(mint(tables=["notes"])))
    assert response.status == 403
    assert response.content_type == "application/json"
    body = await response.json()
    assert body["error"] == "table_not_granted"
    assert body["table"] == "points"


async def test_a_granted_table_is_read_whole(grants_client, mint):
    response = await grants_client.get("/chunked/notes?format=csv", headers=grants.auth(mint(tables=["notes"])))
    assert response.status == 200
    assert (await response.read()).count(b"\n") == grants.NOTES_ROWS + 1


@pytest.mark.parametrize("claim", [["*.*"], ["secret"], ["public.*"]])
async def test_a_table_not_served_is_a_404_whatever_the_grant(grants_client, mint, claim):
    response = await grants_client.get("/chunked/secret", headers=grants.auth(mint(tables=claim)))
    assert response.status == 404
    assert (await response.json())["error"] == "table_not_found"


@pytest.mark.parametrize(
    ("claim", "readable"),
    [
        (["audit.*"], {"audit.events"}),
        # Without a schema a pattern matches what search_path finds, as in the tables setting.
        (["*"], {"points", "notes"}),
        (["public.n*"], {"notes"}),
        ("points, audit.events", {"points", "audit.events"}),
        ([], set()),
    ],
)
async def test_the_claims_patterns_match_as_the_tables_setting_does(grants_client, mint, claim, readable):
    token = mint(tables=claim)
    for name in grants.TABLES:
        expected = 200 if name in readable else 403
        assert await _status(grants_client, f"/chunked/{name}?limit=1", token) == expected, name


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/standard/points"),
        ("GET", "/chunked/points.csv"),
        ("GET", "/standard/points.ndjson"),
        ("HEAD", "/chunked/points"),
        ("HEAD", "/standard/points"),
        # The bare endpoints serve the first table the setting names: points.
        ("GET", "/chunked"),
        ("GET", "/standard.csv"),
        ("HEAD", "/chunked"),
    ],
)
async def test_every_way_to_a_table_not_granted_is_refused(grants_client, mint, method, path):
    assert await _status(grants_client, path, mint(tables=["notes"]), method) == 403
    assert await _status(grants_client, path, mint(tables=["points"]), method) == 200


async def test_tables_lists_only_the_granted_tables(grants_client, mint):
    response = await grants_client.get("/tables", headers=grants.auth(mint(tables=["notes", "audit.*"])))
    listing = await response.json()
    assert sorted(table["name"] for table in listing["tables"]) == ["audit.events", "notes"]
    # The bare endpoint's table (points) is not the token's to read.
    assert listing["default"] is None


async def test_tables_names_the_default_table_when_it_is_granted(grants_client, mint):
    listing = await (await grants_client.get("/tables", headers=grants.auth(mint()))).json()
    assert listing["default"] == "points"
    assert {table["name"] for table in listing["tables"]} == set(grants.TABLES)


async def test_openapi_documents_only_the_granted_tables(grants_client, mint):
    document = await (await grants_client.get("/openapi.json", headers=grants.auth(mint(tables=["notes"])))).json()
    exports = sorted(path for path in document["paths"] if path.startswith(("/chunked", "/standard")))
    assert exports == ["/chunked/notes", "/standard/notes"]
    assert [schema.get("title") for schema in document["components"]["schemas"].values()] == ["public.notes", None]


async def test_default_grant_is_what_a_token_without_the_claim_reads(aiohttp_client, grants_settings, mint):
    client = await aiohttp_client(create_app(grants_settings.replace(default_grant=("notes",))))
    assert await _status(client, "/chunked/notes?limit=1", mint()) == 200
    assert await _status(client, "/chunked/points?limit=1", mint()) == 403
    # A claim replaces the default, wider or narrower.
    assert await _status(client, "/chunked/points?limit=1", mint(tables=["points"])) == 200


async def test_an_empty_default_grant_reads_nothing_without_a_claim(aiohttp_client, grants_settings, mint):
    client = await aiohttp_client(create_app(grants_settings.replace(default_grant=())))
    for name in grants.TABLES:
        assert await _status(client, f"/chunked/{name}?limit=1", mint()) == 403
    listing = await (await client.get("/tables", headers=grants.auth(mint()))).json()
    assert listing["tables"] == []


@pytest.mark.parametrize("claim", [5, {"points": True}, [1, 2], ['"unclosed'], "a.b.c"])
async def test_a_tables_claim_that_cannot_be_read_is_a_401(grants_client, mint, claim):
    response = await grants_client.get("/chunked/points", headers=grants.auth(mint(tables=claim)))
    assert response.status == 401
    body = await response.json()
    assert "tables claim" in body["detail"]


async def test_a_role_claim_where_roles_are_off_is_a_403(aiohttp_client, grants_settings, mint):
    client = await aiohttp_client(create_app(grants_settings.replace(token_roles=False)))
    response = await client.get("/chunked/points", headers=grants.auth(mint(role=grants.ANALYST)))
    assert response.status == 403
    body = await response.json()
    assert body["error"] == "role_refused"
    assert "token_roles" in body["detail"]
