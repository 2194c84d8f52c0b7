"""Through a stock PgBouncer in transaction pooling mode (2 server connections): every endpoint and format,
concurrently, byte for byte what a direct connection gives; statement_timeout still PostgreSQL's."""

from __future__ import annotations

import asyncio
import itertools
import logging
from urllib.parse import quote, urlsplit

import pytest

from tests.support import corpus
from tests.support.bodies import ENDPOINTS, FORMATS
from tests.support.pg import ROWS, points_locked
from tests.support.running import running

CONCURRENT_EXPORTS = 8


async def _bodies(settings, auth, paths: list[str]) -> list[bytes]:
    async with running(settings.replace(standard_max_concurrency=CONCURRENT_EXPORTS)) as server:

        async def get(path: str) -> bytes:
            async with server.session.get(f"{server.url}{path}", headers=auth) as response:
                assert response.status == 200, await response.text()
                return await response.read()

        return await asyncio.gather(*(get(path) for path in paths))


@pytest.mark.parametrize("query", ["", "&page_size=100", "&after_id=1000&limit=777", "&limit=0"])
async def test_eight_concurrent_exports_in_every_format_equal_the_direct_ones(settings, pgbouncer, auth, query):
    pooled = settings.replace(database_url=pgbouncer.url(), pool_max_size=4)
    combos = list(itertools.product(ENDPOINTS, FORMATS))
    # page_size is /chunked's alone.
    paths = [
        f"/{endpoint}?format={fmt}{query}" for endpoint, fmt in combos if endpoint == "chunked" or "page" not in query
    ]
    direct = await _bodies(settings, auth, paths)
    for start in range(0, len(paths), CONCURRENT_EXPORTS):
        batch = paths[start : start + CONCURRENT_EXPORTS]
        through_pooler = await _bodies(pooled, auth, batch)
        assert through_pooler == direct[start : start + CONCURRENT_EXPORTS], batch


async def test_the_pooler_is_recognised_at_start_up(settings, pgbouncer, caplog):
    caplog.set_level(logging.INFO)
    async with running(settings.replace(database_url=pgbouncer.url())) as server:
        health = await server.session.get(f"{server.url}/healthz")
        assert health.status == 200
    assert any("pooler" in r.getMessage() and "statement_timeout" in r.getMessage() for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_statement_timeout_is_enforced_by_postgresql_through_the_pooler(settings, pgbouncer, database_url, auth):
    pooled = settings.replace(database_url=pgbouncer.url(), statement_timeout=0.5)
    async with running(pooled) as server, points_locked(database_url):
        response = await server.session.get(f"{server.url}/chunked", headers=auth)
        assert response.status == 503
        assert (await response.json())["error"] == "query_timeout"


async def test_a_timeout_leaves_no_setting_behind_for_the_next_client(settings, pgbouncer, database_url, auth):
    """SET LOCAL ends with its transaction: after a cancelled page, the pooled connection serves a whole export."""
    pooled = settings.replace(database_url=pgbouncer.url(), statement_timeout=0.5, pool_max_size=2)
    async with running(pooled) as server:
        async with points_locked(database_url):
            response = await server.session.get(f"{server.url}/chunked", headers=auth)
            assert response.status == 503
        for _ in range(4):
            response = await server.session.get(f"{server.url}/chunked?format=csv", headers=auth)
            assert response.status == 200
            assert (await response.read()).count(b"\n") == ROWS + 1 + ROWS // 101


CORPUS_PATHS = [
    f"/{endpoint}/{quote(name, safe='')}?format={fmt}"
    for name in (corpus.URL_NAME, f"{corpus.SCHEMA}.a_view", f"{corpus.SCHEMA}.parted")
    for endpoint in ENDPOINTS
    for fmt in ("ndjson", "csv", "arrow")
]


async def test_any_table_through_the_pooler_equals_the_direct_export(settings, pgbouncer, corpus_url, auth):
    """A composite key, a view (one COPY in a transaction; a cursor for Arrow) and a partitioned table,
    behind transaction pooling, byte for byte what a direct connection gives."""
    direct_settings = settings.replace(database_url=corpus_url, tables=corpus.TABLES)
    dbname = urlsplit(corpus_url).path.lstrip("/")
    pooled = direct_settings.replace(database_url=pgbouncer.url(dbname), pool_max_size=4)
    for start in range(0, len(CORPUS_PATHS), CONCURRENT_EXPORTS):
        batch = CORPUS_PATHS[start : start + CONCURRENT_EXPORTS]
        assert await _bodies(pooled, auth, batch) == await _bodies(direct_settings, auth, batch), batch
