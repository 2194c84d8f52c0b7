"""Roles behind a stock PgBouncer in transaction pooling mode, with ONE server connection that every
client's transactions share: a role that sees half the rows (a row-level security policy) gets exactly
that half, in every format from both endpoints, and the next user of the server connection is the
service's login again (SET LOCAL ROLE ends with each transaction)."""

from __future__ import annotations

import asyncpg
import pytest

from tests.support import grants
from tests.support.bodies import ENDPOINTS
from tests.support.running import running


@pytest.fixture
def pooled(grants_settings, grants_pgbouncer):
    return grants_settings.replace(database_url=grants_pgbouncer.url(grants.DATABASE), pool_max_size=2)


async def _current_user_through(bouncer) -> str:
    conn = await asyncpg.connect(bouncer.url(grants.DATABASE), statement_cache_size=0)
    try:
        return await conn.fetchval("SELECT current_user")
    finally:
        await conn.close()


async def test_a_role_behind_pgbouncer_gets_exactly_its_half_in_every_format(pooled, mint):
    analyst = grants.auth(mint(role=grants.ANALYST))
    async with running(pooled) as server:
        for endpoint in ENDPOINTS:
            for fmt in grants.ALL_FORMATS:
                for query in ("", "&page_size=37", "&snapshot=off"):
                    if endpoint == "standard" and query:
                        continue
                    path = f"/{endpoint}/points?format={fmt}{query}"
                    async with server.session.get(f"{server.url}{path}", headers=analyst) as response:
                        assert response.status == 200, path
                        assert grants.ids_of(fmt, await response.read()) == grants.ANALYST_IDS, path


async def test_behind_pgbouncer_the_next_user_of_the_server_connection_is_the_login(pooled, grants_pgbouncer, mint):
    async with running(pooled) as server:
        for path in ("/chunked/points?page_size=100", "/chunked/points?snapshot=off", "/standard/points"):
            async with server.session.get(
                f"{server.url}{path}", headers=grants.auth(mint(role=grants.ANALYST))
            ) as response:
                assert response.status == 200
                await response.read()
        refused = await server.session.get(
            f"{server.url}/chunked/notes", headers=grants.auth(mint(role=grants.ANALYST))
        )
        assert refused.status == 403
        # One server connection: this client's transaction runs on the one the role's ran on.
        assert await _current_user_through(grants_pgbouncer) == grants.LOGIN
        async with server.session.get(f"{server.url}/chunked/points.csv", headers=grants.auth(mint())) as response:
            assert grants.ids_of("csv", await response.read()) == list(range(1, grants.ROWS + 1))


@pytest.mark.parametrize("role", [grants.OUTSIDER, "no_such_role"])
async def test_a_role_the_login_cannot_assume_is_a_403_behind_pgbouncer(pooled, mint, role):
    async with running(pooled) as server:
        response = await server.session.get(f"{server.url}/chunked/points", headers=grants.auth(mint(role=role)))
        assert response.status == 403
        assert (await response.json())["error"] == "role_refused"
