"""Graceful shutdown of a real `python run.py serve` process: SIGTERM, finish or abort the streams, exit 0; a
second Ctrl+C cuts the streams still draining."""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import pytest

from streaming_api import settings as settings_module
from streaming_api.tokens import load_keys, mint_token
from tests.support.bodies import assert_rows
from tests.support.pg import BIG_ROWS
from tests.support.processes import ServerProcess, listening_addresses, processes_mentioning
from tests.support.raw_http import RawClient
from tests.support.waiting import wait_until

# Enough that a stream whose client stops reading cannot finish into the socket buffers (about 8 MB).
SHUTDOWN_ROWS = 60_000
SHUTDOWN_TIMEOUT = 5
ABORTED = "aborting 1 request(s) still in flight"


async def _refuses_connections(port: int, within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except ConnectionRefusedError:
            return
        writer.close()
        assert time.monotonic() < deadline, f"still accepting connections {within:g} s after SIGTERM"
        await asyncio.sleep(0.01)


async def test_sigterm_finishes_streams_in_flight_aborts_the_stuck_one_and_exits_0(tmp_path, jwt_secret):
    data_dir = tmp_path / "data"
    server = ServerProcess.start(
        tmp_path,
        {
            # No database_url: the server starts (and must stop) its own embedded PostgreSQL.
            "data_dir": str(data_dir),
            "rows": SHUTDOWN_ROWS,
            "jwt_secret": jwt_secret,
            "shutdown_timeout": SHUTDOWN_TIMEOUT,
            "log_level": "INFO",
        },
    )
    try:
        await server.wait_ready(within=180)
        # Started without --host: it listens on loopback only.
        assert listening_addresses(server.port) == ["127.0.0.1"]

        token = mint_token(
            load_keys(settings_module.build({"jwt_secret": jwt_secret, "data_dir": str(data_dir)})), ttl=600
        )
        auth = {"Authorization": f"JWT {token}"}
        async with aiohttp.ClientSession() as session:
            # Two streams in flight, neither read yet: one will be read to the end, one never.
            finishing = await session.get(f"http://127.0.0.1:{server.port}/chunked", headers=auth)
            assert finishing.status == 200
            stuck = await RawClient.get(server.port, "/chunked", auth)
            assert stuck.status == 200

            server.terminate()
            await _refuses_connections(server.port, within=10)

            body = await asyncio.wait_for(finishing.read(), SHUTDOWN_TIMEOUT)
            assert_rows("ndjson", body, 0, SHUTDOWN_ROWS)

        # The stuck client reads nothing until the server gives up on it, then takes what is left.
        await wait_until(
            lambda: ABORTED in server.log, within=SHUTDOWN_TIMEOUT + 30, what="shutdown aborts the stuck stream"
        )
        await stuck.read_to_end(within=30)
        assert not stuck.decoder.complete, "the stuck stream must end as an incomplete transfer"
        stuck.close()

        assert await asyncio.to_thread(server.process.wait, 60) == 0, server.log
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait()

    log = server.log
    assert log.count(ABORTED) == 1, log
    assert "Traceback" not in log, log
    # The embedded PostgreSQL was stopped (pg_ctl removes its pid file) and nothing of it runs on.
    assert not (data_dir / "postgres" / "postmaster.pid").exists()
    assert processes_mentioning(str(data_dir / "postgres")) == []


@pytest.mark.parametrize("workers", [1, 2], ids=["one process", "two workers"])
async def test_a_second_ctrl_c_while_streams_drain_cuts_them_without_a_traceback(
    big_url, jwt_secret, tmp_path, workers
):
    server = ServerProcess.start(
        tmp_path,
        {
            "database_url": big_url,
            "rows": BIG_ROWS,
            "jwt_secret": jwt_secret,
            "data_dir": str(tmp_path / "data"),
            "workers": workers,
            # The drain would outlast the test's every wait: only the second Ctrl+C can end it in time.
            "shutdown_timeout": 600,
            "send_timeout": 600,
        },
    )
    try:
        await server.wait_ready(within=120)
        await wait_until(lambda: "Press Ctrl+C to stop." in server.log, 60, "every worker serving")
        token = mint_token(load_keys(settings_module.build({"jwt_secret": jwt_secret})), ttl=600)
        stuck = await RawClient.get(server.port, "/chunked", {"Authorization": f"JWT {token}"})
        assert stuck.status == 200

        server.process.send_signal(signal.SIGINT)
        await wait_until(lambda: "waiting up to 600 s for 1 request(s)" in server.log, 30, "the drain under way")
        server.process.send_signal(signal.SIGINT)
        assert await asyncio.to_thread(server.process.wait, 60) == 0, server.log

        await stuck.read_to_end(within=30)
        assert not stuck.decoder.complete, "a cut stream ends as an incomplete transfer"
        stuck.close()
    finally:
        server.stop()
    assert "1 request(s) in flight cut short" in server.log
    assert "Traceback" not in server.log, server.log
