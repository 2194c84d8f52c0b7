"""statement_timeout and request_deadline: a 503 before the headers, an aborted transfer after them.

A lock on the points table makes a page query wait on cue, so no test depends on a query being slow.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest

from tests.support.bodies import ENDPOINTS
from tests.support.pg import points_locked
from tests.support.raw_http import RawClient
from tests.support.running import running
from tests.support.waiting import busy_connections, connections_back, wait_until


async def _assert_503(response: aiohttp.ClientResponse, error: str) -> None:
    assert response.status == 503
    assert int(response.headers["Retry-After"]) > 0
    assert (await response.json())["error"] == error


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_statement_timeout_before_the_headers_is_a_503(settings, database_url, auth, endpoint):
    async with running(settings.replace(statement_timeout=0.2, shutdown_timeout=1)) as server:
        async with points_locked(database_url), aiohttp.ClientSession() as session:
            response = await session.get(f"{server.url}/{endpoint}", headers=auth)
            await _assert_503(response, "query_timeout")
        await connections_back(server)


async def test_statement_timeout_mid_stream_aborts_the_transfer(big_settings, big_url, auth, caplog):
    caplog.set_level(logging.INFO)
    async with running(big_settings.replace(statement_timeout=0.5)) as server, aiohttp.ClientSession() as session:
        response = await session.get(f"{server.url}/chunked", headers=auth)
        assert response.status == 200
        async with points_locked(big_url):
            # The client reads on; the next page query waits on the lock until statement_timeout cancels it.
            with pytest.raises(aiohttp.ClientPayloadError):
                await asyncio.wait_for(response.read(), 30)
        await wait_until(lambda: server.in_flight == 0, within=5, what="the handler ends")
        await connections_back(server)

    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].startswith("stream aborted after ")
    assert "QueryCanceledError" in errors[0]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_request_deadline_before_the_headers_is_a_503(settings, database_url, auth, endpoint):
    patient_queries = settings.replace(request_deadline=0.3, statement_timeout=60, shutdown_timeout=1)
    async with running(patient_queries) as server:
        async with points_locked(database_url), aiohttp.ClientSession() as session:
            response = await session.get(f"{server.url}/{endpoint}", headers=auth)
            await _assert_503(response, "deadline_exceeded")
        # The abandoned query was cancelled and its connection is back in the pool.
        await wait_until(lambda: busy_connections(server.pool) == 0, within=5, what="the connection is back")


async def test_request_deadline_mid_stream_aborts_the_transfer(big_settings, auth, caplog):
    caplog.set_level(logging.INFO)
    async with running(big_settings.replace(request_deadline=1.0)) as server:
        client = await RawClient.get(server.port, "/chunked", auth)
        assert client.status == 200
        # The client stops reading; send_timeout (60 s) is far off, so the request deadline ends it.
        await wait_until(lambda: server.in_flight == 0, within=10, what="the deadline ends the stream")
        await client.read_to_end(within=10)
        assert not client.decoder.complete
        client.close()
        await connections_back(server)

    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "request_deadline (1 s) passed" in errors[0]
