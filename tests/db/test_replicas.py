"""Read replicas: a real hot standby of the test PostgreSQL serves exports; with it stopped, exports still
complete from the primary; a replica down at start-up is a warning; /healthz reports each; behind
PgBouncer too."""

from __future__ import annotations

import logging
import re
from urllib.parse import quote, urlsplit

import pytest

from streaming_api import settings as settings_module
from streaming_api.db import sources as sources_module
from streaming_api.settings import SettingsError
from streaming_api.web.keys import SOURCES
from tests.support import corpus
from tests.support.bodies import assert_rows
from tests.support.pg import ROWS
from tests.support.pgbouncer import PgBouncer
from tests.support.running import running
from tests.support.waiting import wait_until

ACCESS = "streaming_api.access"


def _sources_used(caplog: pytest.LogCaptureFixture) -> list[str]:
    return re.findall(
        r"GET /chunked\S* .* source=(\S+) ", "\n".join(r.getMessage() for r in caplog.records if r.name == ACCESS)
    )


async def _export(server) -> None:
    async with server.session.get(f"{server.url}/chunked?format=csv", headers=server.auth) as response:
        assert response.status == 200
        assert_rows("csv", await response.read(), 0, ROWS)


@pytest.fixture
def with_auth(auth):
    def attach(server):
        server.auth = auth
        return server

    return attach


async def test_exports_read_from_the_standby(settings, standby, with_auth, caplog):
    caplog.set_level(logging.INFO, logger=ACCESS)
    async with running(settings.replace(replica_urls=(standby.url(),))) as server:
        for _ in range(3):
            await _export(with_auth(server))
    assert _sources_used(caplog) == ["replica1"] * 3


async def test_an_export_from_the_standby_reads_a_snapshot_of_the_standby(settings, standby, auth):
    """The snapshot is exported by the standby (a hot standby can), named for it, and the response says its
    data may lag the primary's; /standard given that snapshot reads the standby at the same moment."""
    async with running(settings.replace(replica_urls=(standby.url(),))) as server:
        async with server.session.get(f"{server.url}/chunked?page_size=100", headers=auth) as response:
            snapshot = response.headers["X-Snapshot"]
            assert snapshot.startswith("replica1:")
            assert "standby" in response.headers["X-Snapshot-Source"]
            body = await response.read()
        async with server.session.get(f"{server.url}/standard?snapshot={snapshot}", headers=auth) as response:
            assert response.status == 200 and response.headers["X-Snapshot"] == snapshot
            assert await response.read() == body
        # A resume naming the primary's server for a snapshot the standby holds is refused, never mixed.
        elsewhere = snapshot.replace("replica1:", "primary:")
        async with server.session.get(f"{server.url}/standard?snapshot={elsewhere}", headers=auth) as response:
            assert response.status == 409 and (await response.json())["error"] == "snapshot_gone"
    assert_rows("ndjson", body, 0, ROWS)


async def test_exports_still_complete_from_the_primary_once_the_standby_stops(settings, standby, with_auth, caplog):
    caplog.set_level(logging.INFO)
    try:
        async with running(settings.replace(replica_urls=(standby.url(),))) as server:
            await _export(with_auth(server))
            standby.stop()
            for _ in range(3):
                await _export(server)
            health = await (await server.session.get(f"{server.url}/healthz")).json()
    finally:
        standby.start()
    assert _sources_used(caplog) == ["replica1", "primary", "primary", "primary"]
    assert any(
        "replica 1" in r.getMessage() and "failed before the first byte" in r.getMessage() for r in caplog.records
    )
    assert health["status"] == "ok"
    assert health["replicas"][0]["status"] == "unavailable"


async def test_exports_spread_across_replicas(settings, standby, database_url, tmp_path, with_auth, caplog):
    """Two replicas: the standby, and the standby again through PgBouncer (replicas work behind it too)."""
    caplog.set_level(logging.INFO, logger=ACCESS)
    bouncer = PgBouncer(standby.url(), tmp_path).start()
    try:
        async with running(settings.replace(replica_urls=(standby.url(), bouncer.url()))) as server:
            for _ in range(4):
                await _export(with_auth(server))
    finally:
        bouncer.stop()
    assert sorted(_sources_used(caplog)) == ["replica1", "replica1", "replica2", "replica2"]


async def test_a_replica_down_at_start_up_is_one_warning_and_the_service_starts(settings, tmp_path, with_auth, caplog):
    caplog.set_level(logging.INFO)
    nowhere = f"postgresql://postgres@/postgres?host={tmp_path}&port=5999"
    async with running(settings.replace(replica_urls=(nowhere,))) as server:
        await _export(with_auth(server))
        health = await (await server.session.get(f"{server.url}/healthz")).json()
    warnings = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "replica 1" in r.getMessage()
    ]
    assert len(warnings) == 1
    assert f"{tmp_path}:5999" in warnings[0]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert _sources_used(caplog) == ["primary"]
    assert health == {"status": "ok", "database": "ok", "replicas": [health["replicas"][0]]}
    assert health["replicas"][0]["status"] == "unavailable"


async def test_a_replica_that_answers_again_is_read_from_again(settings, standby, with_auth, caplog, monkeypatch):
    monkeypatch.setattr(sources_module, "CHECK_SECONDS", 0.1)
    monkeypatch.setattr(sources_module, "RETRY_SECONDS", 60.0)  # only the background check brings it back
    caplog.set_level(logging.INFO)
    try:
        async with running(settings.replace(replica_urls=(standby.url(),))) as server:
            standby.stop()
            await _export(with_auth(server))
            standby.start()
            replica = server.app[SOURCES].replicas[0]
            await wait_until(lambda: replica.healthy, within=30, what="the replica is back")
            await _export(server)
    finally:
        standby.start()
    assert _sources_used(caplog)[-1] == "replica1"


def test_a_replica_url_that_does_not_parse_stops_start_up_naming_the_setting():
    with pytest.raises(SettingsError) as caught:
        settings_module.build({"replica_urls": ("postgresql://user:secret@host:notaport/db",)})
    assert "replica_urls" in str(caught.value)
    assert "secret" not in str(caught.value)


async def test_any_table_exports_from_the_standby_as_from_the_primary(settings, standby, corpus_url, auth, caplog):
    """The corpus (a composite key, every type; a view without a key) read from the hot standby: the
    bytes the primary gives."""
    caplog.set_level(logging.INFO, logger=ACCESS)
    dbname = urlsplit(corpus_url).path.lstrip("/")
    primary = settings.replace(database_url=corpus_url, tables=corpus.TABLES)
    paths = [
        f"/chunked/{quote(name, safe='')}?format={fmt}&page_size=3"
        for name in (corpus.URL_NAME, f"{corpus.SCHEMA}.a_view")
        for fmt in ("ndjson", "arrow")
    ]

    async def bodies(replica_urls: tuple[str, ...]) -> list[bytes]:
        async with running(primary.replace(replica_urls=replica_urls)) as server:
            found = []
            for path in paths:
                async with server.session.get(f"{server.url}{path}", headers=auth) as response:
                    assert response.status == 200, await response.text()
                    found.append(await response.read())
            return found

    from_primary = await bodies(())
    await _replayed(standby.url(dbname))
    assert await bodies((standby.url(dbname),)) == from_primary
    assert "replica1" in _sources_used(caplog)


async def _replayed(url: str, within: float = 30.0) -> None:
    """Once the standby has replayed the corpus (it may have been made just now)."""
    import asyncio
    import time

    import asyncpg

    deadline = time.monotonic() + within
    while True:
        try:
            conn = await asyncpg.connect(url)
            try:
                table = f'"{corpus.SCHEMA}"."{corpus.TABLE}"'
                if await conn.fetchval(f"SELECT count(*) FROM {table}") == corpus.ROWS:
                    return
            finally:
                await conn.close()
        except (asyncpg.PostgresError, OSError):
            pass
        assert time.monotonic() < deadline, "the standby did not replay the corpus"
        await asyncio.sleep(0.1)
