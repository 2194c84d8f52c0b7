"""Behind a real nginx: the recipe in docs/deployment.md, and the stock `proxy_pass` alone."""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import pytest

from tests.support import nginx as nginx_support
from tests.support.bodies import FORMATS, assert_rows
from tests.support.nginx import Nginx, recipe, stock
from tests.support.pg import BIG_ROWS, ROWS, while_the_database_fails
from tests.support.running import running

pytestmark = pytest.mark.skipif(
    not nginx_support.available(), reason="nginx is not installed (.ci/run installs Debian's package)"
)

CONFIGS: dict[str, Callable[[int], str]] = {"recipe": lambda _: recipe(), "stock": stock}


@contextmanager
def nginx_in_front(kind: str, upstream_port: int, workdir: Path) -> Iterator[Nginx]:
    proxy = Nginx(CONFIGS[kind](upstream_port), upstream_port, workdir).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.mark.parametrize("kind", CONFIGS)
@pytest.mark.parametrize("endpoint", ["chunked", "standard"])
@pytest.mark.parametrize("fmt", FORMATS)
async def test_every_export_passes_whole(settings, auth, tmp_path, kind, endpoint, fmt):
    async with running(settings) as server:
        with nginx_in_front(kind, server.port, tmp_path) as proxy:
            async with server.session.get(f"{proxy.url}/{endpoint}?format={fmt}", headers=auth) as response:
                assert response.status == 200
                body = await response.read()
    assert_rows(fmt, body, 0, ROWS)


async def test_the_stock_proxy_speaks_http10_to_the_service_and_never_answers_502(settings, auth, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="streaming_api.access")
    async with running(settings) as server:
        with nginx_in_front("stock", server.port, tmp_path) as proxy:
            async with server.session.get(f"{proxy.url}/chunked", headers=auth) as response:
                assert response.status == 200
                assert response.headers.get("Transfer-Encoding") == "chunked"
                await response.read()
    assert "upstream" not in proxy.error_log or "[error]" not in proxy.error_log


@pytest.mark.parametrize("kind", CONFIGS)
async def test_a_stream_cut_mid_way_reaches_the_client_as_incomplete(big_settings, big_url, auth, tmp_path, kind):
    async with running(big_settings) as server:
        with nginx_in_front(kind, server.port, tmp_path) as proxy:
            response = await server.session.get(f"{proxy.url}/chunked", headers=auth)
            assert response.status == 200
            with pytest.raises(aiohttp.ClientPayloadError):
                await while_the_database_fails(big_url, response.read())
            error_log = proxy.error_log
    assert re.search(r"\(104: Connection reset by peer\) while reading upstream", error_log), error_log


async def test_the_recipe_streams_unbuffered(big_settings, auth, tmp_path, caplog):
    """A client that takes the first rows and then stops reading holds the export back through the recipe's
    nginx, as it would without nginx (send_timeout then drops it): nginx does not read ahead of the client.
    A buffering proxy would have taken the whole export off the service instead."""
    caplog.set_level(logging.INFO)
    async with running(big_settings.replace(send_timeout=1.0)) as server:
        with nginx_in_front("recipe", server.port, tmp_path) as proxy:
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            loop = asyncio.get_running_loop()
            await loop.sock_connect(sock, ("127.0.0.1", proxy.port))
            request = f"GET /chunked HTTP/1.1\r\nHost: t\r\nAuthorization: {auth['Authorization']}\r\n\r\n"
            await loop.sock_sendall(sock, request.encode())
            first = b""
            while b'{"id":1,' not in first:
                first += await asyncio.wait_for(loop.sock_recv(sock, 4096), 10)
            # Now read nothing more, and wait for the service to give up on this client.
            for _ in range(200):
                if any("send_timeout" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.05)
            sock.close()
    dropped = [r.getMessage() for r in caplog.records if "send_timeout" in r.getMessage()]
    assert dropped, "the service finished the export although the client read almost nothing"
    rows = int(re.search(r"dropped after (\d+) rows", dropped[0]).group(1))
    assert 0 < rows < BIG_ROWS


def test_the_recipe_waits_longer_than_the_services_own_deadline():
    """nginx's timeouts must not cut an export the service itself would still let run."""
    from streaming_api.settings import Settings

    timeouts = {name: int(value) for name, value in re.findall(r"(proxy_\w+_timeout)\s+(\d+)s;", recipe())}
    assert set(timeouts) == {"proxy_read_timeout", "proxy_send_timeout"}
    assert min(timeouts.values()) > Settings().request_deadline


async def _log_line_client(server_settings, tmp_path, caplog, connect_from: str, forwarded_for: str) -> str:
    caplog.set_level(logging.INFO, logger="streaming_api.access")
    async with running(server_settings) as server:
        with nginx_in_front("recipe", server.port, tmp_path) as proxy:
            connector = aiohttp.TCPConnector(local_addr=(connect_from, 0))
            headers = {"X-Forwarded-For": forwarded_for}
            async with (
                aiohttp.ClientSession(connector=connector) as session,
                session.get(f"{proxy.url}/healthz", headers=headers) as answer,
            ):
                assert answer.status == 200
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("GET /healthz"))
    return re.search(r" client=(\S+) ", line).group(1)


async def test_the_client_address_comes_from_x_forwarded_for_only_through_a_trusted_proxy(settings, tmp_path, caplog):
    trusted = settings.replace(trusted_proxies=("127.0.0.1",))
    # The client connects to nginx from 127.0.0.2 and claims to be 203.0.113.7: nginx appends what it saw.
    assert await _log_line_client(trusted, tmp_path, caplog, "127.0.0.2", "203.0.113.7") == "127.0.0.2"


async def test_without_trusted_proxies_x_forwarded_for_is_ignored(settings, tmp_path, caplog):
    assert await _log_line_client(settings, tmp_path, caplog, "127.0.0.2", "203.0.113.7") == "127.0.0.1"
