"""Streams under stress: clients that leave, a database that fails mid-stream, slow clients, resuming.

Real server on a real socket (configured as `run.py serve` runs it), real PostgreSQL, a table big enough
(reliability_support.BIG_ROWS) that a stream cannot hide in the socket buffers.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import shutil

import aiohttp
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.support.bodies import CSV_HEADER, FORMATS, assert_rows, complete_rows, row_ids
from tests.support.pg import BIG_ROWS, while_the_database_fails
from tests.support.raw_http import RawClient
from tests.support.running import running
from tests.support.waiting import connections_back, wait_until


def _messages(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


def _assert_no_traceback_or_warning(caplog: pytest.LogCaptureFixture) -> None:
    noisy = [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]
    assert not noisy, [r.getMessage() for r in noisy]


# --- 1. the client leaves mid-stream ----------------------------------------------------------------


async def test_client_leaving_mid_stream_stops_the_handler_and_frees_its_connection(big_settings, auth, caplog):
    caplog.set_level(logging.INFO)
    async with running(big_settings) as server:
        client = await RawClient.get(server.port, "/chunked", auth)
        assert client.status == 200
        await client.read_until(lambda body: body.chunks >= 1, within=10)
        client.close()

        await wait_until(lambda: server.in_flight == 0, within=1.0, what="the handler stops")
        await connections_back(server)

    gone = _messages(caplog, "client went away")
    assert len(gone) == 1
    assert gone[0].levelno == logging.INFO
    assert re.fullmatch(r"client went away after [1-9][0-9]* rows", gone[0].getMessage())
    _assert_no_traceback_or_warning(caplog)


async def _leave_after_first_page(server, auth) -> None:
    client = await RawClient.get(server.port, "/chunked", auth)
    assert client.status == 200
    await client.read_until(lambda body: body.chunks >= 1, within=10)
    client.close()
    await wait_until(lambda: server.in_flight == 0, within=1.0, what="the handler stops")


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


# A page (1,000 rows) is about 140 kB: keeping one per request would add 28 MB over 200 requests.
MEMORY_CREEP_LIMIT_MB = 8


async def test_two_hundred_clients_leaving_mid_stream_leak_no_connections_and_no_memory(big_settings, auth):
    async with running(big_settings) as server:
        idle_connections = server.pool.get_idle_size()
        for _ in range(20):  # warm-up: allocator arenas, statement caches, pool connections
            await _leave_after_first_page(server, auth)
        gc.collect()
        rss_before = _rss_mb()
        for _ in range(200):
            await _leave_after_first_page(server, auth)
            await connections_back(server)
        gc.collect()
        rss_after = _rss_mb()
        assert server.pool.get_idle_size() >= idle_connections
        assert rss_after - rss_before < MEMORY_CREEP_LIMIT_MB, f"RSS {rss_before:.1f} -> {rss_after:.1f} MB"


# --- 3. the database fails mid-stream ---------------------------------------------------------------


async def test_database_failing_mid_stream_is_an_incomplete_transfer_and_one_error_line(
    big_settings, big_url, auth, caplog
):
    caplog.set_level(logging.INFO)
    async with running(big_settings) as server, aiohttp.ClientSession() as session:
        response = await session.get(f"{server.url}/chunked", headers=auth)
        assert response.status == 200
        # The client reads nothing yet, so the stream is stuck mid-way when the table gets locked.
        with pytest.raises(aiohttp.ClientPayloadError):
            await while_the_database_fails(big_url, response.read())
        await wait_until(lambda: server.in_flight == 0, within=5, what="the handler ends")
        await connections_back(server)

    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert re.match(r"stream aborted after [1-9][0-9]* rows: ", errors[0].getMessage())
    assert errors[0].exc_info is None


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_reports_a_failed_transfer_when_the_database_fails_mid_stream(big_settings, big_url, token):
    async with running(big_settings) as server:
        curl = await asyncio.create_subprocess_exec(
            "curl",
            "--silent",
            "--header",
            f"Authorization: JWT {token}",
            f"{server.url}/chunked",
            stdout=asyncio.subprocess.PIPE,
        )
        assert curl.stdout is not None
        # curl writes the body to a pipe nobody reads yet: it stops reading the socket, the stream stalls.
        await asyncio.wait_for(curl.stdout.readexactly(1), 10)
        body = await while_the_database_fails(big_url, curl.stdout.read())
        # 56: the connection was reset (the server's abort), 18: the body ended short; never 0.
        assert await asyncio.wait_for(curl.wait(), 30) in (18, 56)
        assert len(body) + 1 < BIG_ROWS * 100


# --- 4. slow clients ----------------------------------------------------------------------------------


async def test_slow_readers_do_not_starve_a_normal_client(big_settings, auth):
    two_connections = big_settings.replace(pool_min_size=2, pool_max_size=2)
    async with running(two_connections) as server, aiohttp.ClientSession() as session:
        # Each has its headers (so its first page was fetched) before the normal client asks.
        slow = [await RawClient.get(server.port, "/chunked", auth) for _ in range(5)]
        assert [client.status for client in slow] == [200] * 5
        stop = asyncio.Event()
        readers = [asyncio.create_task(client.read_slowly(10_000, stop)) for client in slow]
        try:
            async with asyncio.timeout(30):
                response = await session.get(f"{server.url}/chunked", headers=auth)
                body = await response.read()
            assert response.status == 200
            assert_rows("ndjson", body, 0, BIG_ROWS)
            # The normal client finished while all five slow streams were still being served.
            assert server.in_flight == 5
            assert not any(client.decoder.complete for client in slow)
        finally:
            stop.set()
            await asyncio.gather(*readers)
            for client in slow:
                client.close()
        await wait_until(lambda: server.in_flight == 0, within=5, what="slow streams end")
        await connections_back(server)


async def test_client_that_stops_reading_is_dropped_after_send_timeout(big_settings, auth, caplog):
    caplog.set_level(logging.INFO)
    async with running(big_settings.replace(send_timeout=0.5)) as server:
        client = await RawClient.get(server.port, "/chunked", auth)
        assert client.status == 200
        # The client reads nothing more: once the buffers are full the server must give up on it.
        await wait_until(lambda: server.in_flight == 0, within=10, what="the stalled stream is dropped")
        await connections_back(server)
        await client.read_to_end(within=10)
        assert not client.decoder.complete
        client.close()

    dropped = _messages(caplog, "send_timeout")
    assert len(dropped) == 1
    assert re.fullmatch(
        r"client took no data for 0\.5 s \(send_timeout\): dropped after [1-9][0-9]* rows", dropped[0].getMessage()
    )


async def test_slow_client_that_keeps_reading_is_not_dropped(big_settings, auth, caplog):
    caplog.set_level(logging.INFO)
    async with running(big_settings.replace(send_timeout=1.0)) as server:
        client = await RawClient.get(server.port, "/chunked", auth)
        stop = asyncio.Event()
        # 20 kB/s: one 140 kB page takes 7 s to drain, many times send_timeout, but bytes keep moving.
        reader = asyncio.create_task(client.read_slowly(20_000, stop))
        try:
            await wait_until(lambda: client.decoder.received >= 60_000, within=20, what="3 s of slow reading")
            assert server.in_flight == 1
            assert not _messages(caplog, "send_timeout")
        finally:
            stop.set()
            await reader
            client.close()
        await wait_until(lambda: server.in_flight == 0, within=5, what="the stream ends")


# --- 5. resume ---------------------------------------------------------------------------------------


def _rejoin(fmt: str, kept: bytes, resumed: bytes) -> bytes:
    """What the client holds after resuming: its whole rows, then the resumed rows without a second head."""
    if fmt in ("csv", "text"):
        return kept + resumed.removeprefix(CSV_HEADER) if kept else resumed
    if fmt == "json":
        return kept + resumed.removeprefix(b"[") if len(kept) > 1 else resumed
    return kept + resumed


@hypothesis_settings(max_examples=16, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(FORMATS), cut=st.floats(min_value=0.0, max_value=1.0))
async def test_client_cut_off_resumes_after_its_last_id_and_gets_every_row_exactly_once(client, auth, fmt, cut):
    whole = await (await client.get(f"/chunked?format={fmt}&page_size=100", headers=auth)).read()

    response = await client.get(f"/chunked?format={fmt}&page_size=100", headers=auth)
    partial = await response.content.readexactly(int(len(whole) * cut))
    response.close()  # the connection drops here, mid-stream
    kept = complete_rows(fmt, partial)
    kept_ids = row_ids(fmt, kept)
    last_id = kept_ids[-1] if kept_ids else 0

    resumed = await (await client.get(f"/chunked?format={fmt}&page_size=100&after_id={last_id}", headers=auth)).read()
    assert _rejoin(fmt, kept, resumed) == whole
