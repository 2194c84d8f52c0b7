"""A refused connection: on the first request nothing listens at the URL (a wrong port, a server not started),
which waiting does not cure, so it is said at once; once a server has answered, a refusal is a restart, retried."""

from __future__ import annotations

import asyncio

import pytest

from streaming_api.cli.fetch import EXIT_GAVE_UP
from streaming_api.client import GaveUp, NothingListening, stream_rows
from tests.support.cli import start_cli
from tests.support.processes import communicate_within, free_port

DEADLINE_SECONDS = 60


async def _drain(url: str, **options: object) -> None:
    async for _ in stream_rows(url, "a token", **options):
        pass


async def test_a_refused_first_request_raises_at_once_without_a_retry():
    port = free_port()  # nothing listens there
    retries: list[object] = []
    with pytest.raises(NothingListening) as raised:
        await _drain(f"http://127.0.0.1:{port}/chunked", retries=5, on_retry=retries.append)
    assert retries == []
    assert f"cannot connect to 127.0.0.1:{port}: connection refused" in str(raised.value)


async def test_a_refusal_once_a_server_has_answered_is_retried():
    async def answer_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        listener.close()  # from now on nothing listens: the next attempts are refused
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()

    listener = await asyncio.start_server(answer_once, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    retries: list = []
    with pytest.raises(GaveUp) as raised:
        await _drain(f"http://127.0.0.1:{port}/chunked", retries=2, backoff=0, on_retry=retries.append)
    assert not isinstance(raised.value, NothingListening)
    reasons = [retry.reason for retry in retries]
    assert reasons == ["HTTP 503 Service Unavailable", f"cannot connect to 127.0.0.1:{port}"]


async def test_fetch_with_nothing_listening_is_one_line_at_once(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/chunked"
    process = await start_cli(["fetch", "--url", url], tmp_path, cwd=tmp_path, log_level="WARNING")
    _, stderr = await communicate_within(process, DEADLINE_SECONDS)
    assert process.returncode == EXIT_GAVE_UP
    [line] = stderr.decode().splitlines()  # no "retry 1 of 5" lines before it
    assert line.startswith(f"fetch: cannot connect to 127.0.0.1:{port}: connection refused, nothing listens")
