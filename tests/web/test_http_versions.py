"""HTTP/1.0 clients (curl --http1.0, ab, a stock nginx upstream) and HEAD, over real sockets."""

from __future__ import annotations

import asyncio
import http.client
import re
import shutil

import pytest

from tests.support.bodies import ENDPOINTS, FORMATS, assert_rows
from tests.support.pg import ROWS, points_locked, service_backend_waiting_on_lock, terminate_backend
from tests.support.raw_http import raw_exchange
from tests.support.running import running


def _http10(path: str, token: str, keep_alive: bool = False) -> bytes:
    connection = "Connection: keep-alive\r\n" if keep_alive else ""
    return f"GET {path} HTTP/1.0\r\nHost: test\r\nAuthorization: JWT {token}\r\n{connection}\r\n".encode()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_an_http10_client_gets_every_row(settings, token, endpoint, fmt):
    async with running(settings) as server:
        status, answer = await raw_exchange(server.port, _http10(f"/{endpoint}?format={fmt}", token))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert status == 200
    assert head.startswith(b"HTTP/1.0 200 ")
    assert b"transfer-encoding" not in head.lower()
    assert_rows(fmt, body, 0, ROWS)


async def test_an_http10_keep_alive_client_is_not_left_waiting_after_a_streamed_body(settings, token):
    """A body delimited by the close must be followed by the close, even if the client asked to keep alive."""
    async with running(settings) as server:
        status, answer = await raw_exchange(server.port, _http10("/chunked", token, keep_alive=True), within=10)
    assert status == 200
    assert answer.count(b"\n") >= ROWS


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
async def test_curl_http10_gets_rows(settings, token):
    async with running(settings) as server:
        curl = await asyncio.create_subprocess_exec(
            "curl", "-sS", "--http1.0", "-H", f"Authorization: JWT {token}", f"{server.url}/chunked?format=csv",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        body, _ = await asyncio.wait_for(curl.communicate(), 30)
    assert curl.returncode == 0
    assert_rows("csv", body, 0, ROWS)


@pytest.mark.skipif(shutil.which("ab") is None, reason="ApacheBench (ab) is not installed")
async def test_apachebench_gets_whole_bodies(settings, token):
    async with running(settings) as server:
        ab = await asyncio.create_subprocess_exec(
            "ab", "-n", "20", "-c", "4", "-H", f"Authorization: JWT {token}", f"{server.url}/chunked?limit=1000",
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        report, _ = await asyncio.wait_for(ab.communicate(), 60)
    text = report.decode()
    assert ab.returncode == 0, text
    assert re.search(r"Complete requests:\s+20\b", text), text
    assert re.search(r"Failed requests:\s+0\b", text), text
    assert "Non-2xx" not in text
    # Every body is the same 1,000 rows: ab saw 20 of the same length.
    length = int(re.search(r"Document Length:\s+(\d+) bytes", text).group(1))
    assert length > 1000 * 100


async def test_a_failure_mid_body_resets_an_http10_connection(big_settings, big_url, token):
    """An HTTP/1.0 body ends at the close, so a clean close would make a cut body look whole: a reset."""
    async with running(big_settings) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, limit=1 << 20)
        writer.write(_http10("/chunked", token))
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.0 200 ")
        received = 0
        async with points_locked(big_url):
            pid = await service_backend_waiting_on_lock(big_url, within=30)
            await terminate_backend(big_url, pid)
            with pytest.raises(ConnectionResetError):
                async with asyncio.timeout(30):
                    while data := await reader.read(1 << 16):
                        received += len(data)
        writer.close()
    assert received < 100_000 * 100


@pytest.mark.parametrize("path", ["/chunked", "/standard", "/chunked?format=csv&limit=5", "/standard?format=json"])
async def test_head_answers_with_headers_only_and_the_connection_stays_usable(settings, token, path):
    async with running(settings) as server:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)

        def exchange() -> list[tuple[int, bytes, dict[str, str]]]:
            answers = []
            for method in ("HEAD", "GET"):
                connection.request(method, path, headers={"Authorization": f"JWT {token}"})
                response = connection.getresponse()
                answers.append((response.status, response.read(), dict(response.getheaders())))
            return answers

        (head_status, head_body, head_headers), (get_status, get_body, get_headers) = await asyncio.to_thread(exchange)
        connection.close()
    assert head_status == get_status == 200
    assert head_body == b""
    assert get_body
    assert head_headers["Content-Type"] == get_headers["Content-Type"]
    assert head_headers["Accept-Ranges"] == "none"


async def test_head_runs_no_export(settings, token, caplog):
    caplog.set_level("INFO", logger="streaming_api.access")
    async with running(settings) as server:
        status, answer = await raw_exchange(
            server.port,
            f"HEAD /chunked HTTP/1.1\r\nHost: t\r\nAuthorization: JWT {token}\r\nConnection: close\r\n\r\n".encode(),
        )
    assert status == 200
    assert answer.endswith(b"\r\n\r\n")
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("HEAD /chunked"))
    assert " rows=0 bytes=0 " in line
    assert line.endswith("db_ms=0.00")


async def test_head_without_a_token_is_401(settings):
    async with running(settings) as server:
        status, answer = await raw_exchange(
            server.port, b"HEAD /chunked HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
    assert status == 401
    assert answer.endswith(b"\r\n\r\n")
