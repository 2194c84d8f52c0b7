"""Content coding: zstd and gzip on both endpoints, negotiated from Accept-Encoding, decoded here by the
codings' own libraries (zlib, libzstd), never by the service's code; /chunked decodes page by page."""

from __future__ import annotations

import asyncio
import json
import zlib

import aiohttp
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from tests.support.bodies import ENDPOINTS, FORMATS, assert_rows
from tests.support.pg import ROWS, while_the_database_fails
from tests.support.running import running

try:
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:
    from backports import zstd

CODINGS = ("zstd", "gzip")


def decode(coding: str, body: bytes) -> bytes:
    if coding == "gzip":
        return zlib.decompress(body, wbits=31)
    return zstd.decompress(body)


def decoder(coding: str):
    """An incremental decoder from the coding's own library: feed it bytes, get what they decode to."""
    if coding == "gzip":
        return zlib.decompressobj(wbits=31).decompress
    return zstd.ZstdDecompressor().decompress


async def _raw(
    server, path: str, headers: dict[str, str], method: str = "GET"
) -> tuple[int, CIMultiDictProxy[str], bytes]:
    """The response as sent: not decoded, and with no Accept-Encoding but the one given."""
    session = aiohttp.ClientSession(auto_decompress=False, skip_auto_headers=["Accept-Encoding"])
    async with session, session.request(method, f"{server.url}{path}", headers=headers) as response:
        return response.status, CIMultiDictProxy(CIMultiDict(response.headers)), await response.read()


@pytest.mark.parametrize("coding", CODINGS)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("fmt", FORMATS)
async def test_each_coding_decodes_to_the_identity_body(settings, auth, coding, endpoint, fmt):
    async with running(settings) as server:
        path = f"/{endpoint}?format={fmt}"
        _, plain_headers, plain = await _raw(server, path, {**auth, "Accept-Encoding": "identity"})
        status, headers, encoded = await _raw(server, path, {**auth, "Accept-Encoding": coding})
    assert status == 200
    assert headers["Content-Encoding"] == coding
    assert "Content-Encoding" not in plain_headers
    assert decode(coding, encoded) == plain
    assert len(encoded) < len(plain) / 2
    assert_rows(fmt, plain, 0, ROWS)
    if endpoint == "standard":
        assert int(headers["Content-Length"]) == len(encoded)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("accept_encoding", [None, "identity", "zstd", "gzip, zstd"])
async def test_every_data_response_varies_on_accept_encoding(settings, auth, endpoint, accept_encoding):
    headers = {**auth, **({"Accept-Encoding": accept_encoding} if accept_encoding else {})}
    async with running(settings) as server:
        for method in ("GET", "HEAD"):
            status, response_headers, _ = await _raw(server, f"/{endpoint}?limit=3", headers, method)
            assert status == 200
            assert "Accept-Encoding" in response_headers.getall("Vary", [])


NEGOTIATION = [
    (None, None),  # no header: plain bytes
    ("gzip, deflate, br, zstd", "zstd"),  # what browsers and curl --compressed send: our preference wins a tie
    ("gzip", "gzip"),
    ("gzip;q=1, zstd;q=0.5", "gzip"),
    ("zstd;q=0", None),
    ("br", None),  # not offered: identity
    ("*", "zstd"),
    ("zstd;q=0.4, identity;q=0.9", None),
    ("identity;q=0, gzip", "gzip"),
]


@pytest.mark.parametrize(("accept_encoding", "coding"), NEGOTIATION)
async def test_accept_encoding_q_values_are_honoured(settings, auth, accept_encoding, coding):
    headers = {**auth, **({"Accept-Encoding": accept_encoding} if accept_encoding is not None else {})}
    async with running(settings) as server:
        status, response_headers, _ = await _raw(server, "/chunked?limit=5", headers)
    assert status == 200
    assert response_headers.get("Content-Encoding") == coding


@pytest.mark.parametrize("accept_encoding", ["identity;q=0", "*;q=0", "br, identity;q=0"])
async def test_refusing_identity_and_every_coding_offered_is_406(settings, auth, accept_encoding):
    async with running(settings) as server:
        status, _, answer = await _raw(server, "/chunked", {**auth, "Accept-Encoding": accept_encoding})
    assert status == 406
    body = json.loads(answer)
    assert body["error"] == "not_acceptable_encoding"
    assert "identity" in body["offered"]


async def test_compression_can_be_turned_off(settings, auth):
    async with running(settings.replace(compression=())) as server:
        status, headers, body = await _raw(server, "/chunked", {**auth, "Accept-Encoding": "zstd, gzip"})
    assert status == 200
    assert "Content-Encoding" not in headers
    assert_rows("ndjson", body, 0, ROWS)


@pytest.mark.parametrize("coding", CODINGS)
async def test_the_first_page_decodes_before_the_last_is_sent(big_settings, auth, coding):
    """A client that has read only the first chunk can decode the first page's rows whole, while the
    server still holds the rest of the export (the client reads no more until the end of the test)."""
    async with running(big_settings) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(
            f"GET /chunked HTTP/1.1\r\nHost: t\r\nAuthorization: {auth['Authorization']}\r\n"
            f"Accept-Encoding: {coding}\r\nConnection: close\r\n\r\n".encode()
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert f"Content-Encoding: {coding}".encode() in head
        size = int((await reader.readline()).strip(), 16)
        first_chunk = await reader.readexactly(size)
        still_running = server.in_flight == 1
        writer.close()
    decoded = decoder(coding)(first_chunk)
    assert still_running
    assert decoded.count(b"\n") == big_settings.first_page_size
    assert_rows("ndjson", decoded, 0, big_settings.first_page_size)


@pytest.mark.parametrize("coding", CODINGS)
async def test_an_aborted_compressed_stream_is_visibly_incomplete(big_settings, big_url, auth, coding):
    async with running(big_settings) as server, aiohttp.ClientSession() as session:
        response = await session.get(f"{server.url}/chunked", headers={**auth, "Accept-Encoding": coding})
        assert response.headers["Content-Encoding"] == coding
        with pytest.raises(aiohttp.ClientPayloadError):
            await while_the_database_fails(big_url, response.read())


def test_the_settings_know_every_coding_the_service_can_send():
    from streaming_api.settings import CODINGS as SETTINGS_CODINGS
    from streaming_api.web.encoding import CODINGS as SENT

    assert tuple(SENT) == SETTINGS_CODINGS
