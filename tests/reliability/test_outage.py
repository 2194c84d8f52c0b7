"""The database goes away: 503s before the first byte, an aborted transfer after it, recovery without a restart.

These tests stop and start a PostgreSQL of their own (embedded, in a temporary directory), never the
session's shared one.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Iterator

import aiohttp
import asyncpg
import pytest

from streaming_api.settings import Settings
from streaming_api.web import logfilters
from streaming_api.web.logfilters import TracebackToOneLine
from tests.support.bodies import assert_rows
from tests.support.pg import RestartablePostgres, seed_database
from tests.support.raw_http import RawClient
from tests.support.running import running
from tests.support.scratch import scratch_directory
from tests.support.waiting import connections_back, wait_until

# Enough rows that a stream whose client pauses cannot fit in the socket buffers (about 8 MB).
OUTAGE_ROWS = 60_000


@pytest.fixture(scope="module")
def own_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartablePostgres]:
    with scratch_directory(tmp_path_factory, "outage") as data_dir:
        server = RestartablePostgres(data_dir)
        server.start()
        asyncio.run(seed_database(server.url, OUTAGE_ROWS))
        try:
            yield server
        finally:
            if server.running:
                server.stop()


@pytest.fixture(autouse=True)
def _log_filters_of_run_py_serve() -> None:
    # What `run.py serve` installs: asyncpg's reconnect retries logged as one line, not a traceback.
    logfilters.install()


@pytest.fixture
async def outage_settings(own_postgres: RestartablePostgres, settings: Settings) -> Settings:
    if not own_postgres.running:
        await asyncio.to_thread(own_postgres.start)
    return settings.replace(database_url=own_postgres.url, rows=OUTAGE_ROWS, shutdown_timeout=1)


async def _get(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> tuple[int, dict, bytes]:
    async with session.get(url, headers=headers) as response:
        return response.status, dict(response.headers), await response.read()


async def _poll_until_ok(session: aiohttp.ClientSession, url: str, within: float) -> None:
    deadline = time.monotonic() + within
    while (await _get(session, url, {}))[0] != 200:
        assert time.monotonic() < deadline, f"{url} still not 200 after {within:g} s"
        await asyncio.sleep(0.05)


async def test_database_down_before_the_first_byte_is_a_503_and_the_server_recovers_by_itself(
    own_postgres, outage_settings, auth, caplog
):
    async with running(outage_settings) as server, aiohttp.ClientSession() as session:
        status, _, body = await _get(session, f"{server.url}/chunked?limit=10", auth)
        assert status == 200

        await asyncio.to_thread(own_postgres.stop)
        for path in ("/standard?limit=10", "/chunked?limit=10", "/healthz"):
            status, headers, body = await _get(session, server.url + path, auth)
            assert status == 503, path
            assert headers["Content-Type"].startswith("application/json"), path
            assert int(headers["Retry-After"]) > 0, path
            assert body.startswith(b"{"), path

        await asyncio.to_thread(own_postgres.start)
        # Nothing restarts the service: the pool reconnects on its own.
        await _poll_until_ok(session, f"{server.url}/healthz", within=30)
        for endpoint in ("standard", "chunked"):
            status, _, body = await _get(session, f"{server.url}/{endpoint}", auth)
            assert status == 200
            assert_rows("ndjson", body, 0, OUTAGE_ROWS)

    assert not [r for r in caplog.records if r.exc_info], "no traceback in the log"


def test_pool_reconnect_warnings_are_cut_to_one_line_with_the_reason():
    try:
        raise asyncpg.CannotConnectNowError("the database system is shutting down")
    except asyncpg.CannotConnectNowError:
        record = logging.LogRecord(
            "asyncpg.pool", logging.WARNING, __file__, 1, "Failed to restore the pool %s", ("floor",), sys.exc_info()
        )
    assert TracebackToOneLine().filter(record)
    assert record.exc_info is None
    assert record.getMessage() == (
        "Failed to restore the pool floor: CannotConnectNowError: the database system is shutting down"
    )


async def test_database_stopped_mid_stream_is_an_incomplete_transfer(own_postgres, outage_settings, auth, caplog):
    caplog.set_level(logging.INFO)
    async with running(outage_settings) as server:
        client = await RawClient.get(server.port, "/chunked", auth)
        assert client.status == 200
        # The client reads nothing while the database stops: its stream waits mid-way for the socket.
        await asyncio.to_thread(own_postgres.stop)
        await client.read_to_end(within=30)
        assert not client.decoder.complete
        assert client.decoder.received > 0
        client.close()
        await wait_until(lambda: server.in_flight == 0, within=5, what="the handler ends")
        await connections_back(server)

    assert not [r for r in caplog.records if "client went away" in r.getMessage()]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].getMessage().startswith("stream aborted after ")
