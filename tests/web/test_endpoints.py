"""/standard and /chunked: byte identity, HTTP framing and headers, parameters, content negotiation."""

from __future__ import annotations

import json
import math
import re

import pytest

from tests.support.bodies import CONTENT_TYPES, ENDPOINTS, FORMATS, ids, parse
from tests.support.pg import ROWS


async def _get(client, path: str, headers: dict[str, str]) -> tuple[int, dict, bytes]:
    response = await client.get(path, headers=headers)
    return response.status, response.headers, await response.read()


async def _body(client, auth, path: str) -> bytes:
    status, _, body = await _get(client, path, auth)
    assert status == 200, body
    return body


# --- byte identity --------------------------------------------------------------------------------

QUERIES = ("", "&limit=10", "&after_id=2000", "&after_id=100&limit=500", "&limit=0", f"&after_id={ROWS}")


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize("fmt", FORMATS)
async def test_chunked_body_is_byte_identical_to_standard(client, auth, fmt, query):
    standard = await _body(client, auth, f"/standard?format={fmt}{query}")
    chunked = await _body(client, auth, f"/chunked?format={fmt}{query}")
    assert chunked == standard


# Page sizes that end the rows mid-page, exactly on a page boundary (limit=200), and one row per page.
@pytest.mark.parametrize("pages", ["page_size=100", "page_size=100&limit=200", "page_size=1&limit=250", "page_size=7"])
@pytest.mark.parametrize("fmt", FORMATS)
async def test_chunked_body_does_not_depend_on_page_size(client, auth, fmt, pages):
    limit = re.search(r"limit=(\d+)", pages)
    standard_query = f"&limit={limit.group(1)}" if limit else ""
    standard = await _body(client, auth, f"/standard?format={fmt}{standard_query}")
    assert await _body(client, auth, f"/chunked?format={fmt}&{pages}") == standard


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_serves_every_row_by_default(client, auth, endpoint):
    assert ids("ndjson", await _body(client, auth, f"/{endpoint}")) == list(range(1, ROWS + 1))


# --- HTTP framing and headers ---------------------------------------------------------------------


async def test_standard_sends_content_length(client, auth):
    response = await client.get("/standard", headers={**auth, "Accept-Encoding": "identity"})
    body = await response.read()
    assert int(response.headers["Content-Length"]) == len(body)
    assert "Transfer-Encoding" not in response.headers


async def test_chunked_uses_chunked_transfer_encoding(client, auth):
    response = await client.get("/chunked", headers=auth)
    await response.read()
    assert response.headers["Transfer-Encoding"] == "chunked"
    assert "Content-Length" not in response.headers


async def test_chunked_sends_a_chunk_per_page(client, auth):
    page_size = 100
    response = await client.get(f"/chunked?page_size={page_size}", headers=auth)
    assert response.status == 200
    chunks: list[bytes] = []
    current = b""
    async for data, end_of_http_chunk in response.content.iter_chunks():
        current += data
        if end_of_http_chunk:
            chunks.append(current)
            current = b""
    data_chunks = [chunk for chunk in chunks if chunk]
    assert len(data_chunks) >= math.ceil(ROWS / page_size)
    # No chunk carries more than one page of rows.
    assert max(chunk.count(b"\n") for chunk in data_chunks) <= page_size
    assert ids("ndjson", b"".join(chunks) + current) == list(range(1, ROWS + 1))


@pytest.mark.parametrize(("header", "value"), [("X-Accel-Buffering", "no"), ("Cache-Control", "no-store")])
async def test_chunked_asks_proxies_not_to_buffer_or_cache(client, auth, header, value):
    status, headers, _ = await _get(client, "/chunked?limit=1", auth)
    assert status == 200
    assert headers[header] == value


def _server_timing(header: str) -> dict[str, float]:
    metrics = {}
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        match = re.fullmatch(r"\s*dur=([0-9.]+)\s*", params)
        assert match, header
        metrics[name] = float(match.group(1))
    return metrics


async def test_standard_server_timing_has_db_encode_and_total(client, auth):
    _, headers, _ = await _get(client, "/standard", auth)
    assert set(_server_timing(headers["Server-Timing"])) == {"db", "encode", "total"}


async def test_chunked_server_timing_has_first_page_db_time(client, auth):
    _, headers, _ = await _get(client, "/chunked", auth)
    assert set(_server_timing(headers["Server-Timing"])) == {"db"}


# --- limit, after_id, page_size -------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_limit_returns_the_first_rows(client, auth, endpoint):
    assert ids("ndjson", await _body(client, auth, f"/{endpoint}?limit=10")) == list(range(1, 11))


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_limit_zero_returns_no_rows(client, auth, endpoint):
    assert await _body(client, auth, f"/{endpoint}?limit=0") == b""


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_limit_beyond_the_table_returns_every_row(client, auth, endpoint):
    assert len(ids("ndjson", await _body(client, auth, f"/{endpoint}?limit={ROWS * 10}"))) == ROWS


@pytest.mark.parametrize("after_id", [0, 1, 1000, ROWS - 1])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_after_id_returns_the_rows_after_it(client, auth, endpoint, after_id):
    body = await _body(client, auth, f"/{endpoint}?after_id={after_id}")
    assert ids("ndjson", body) == list(range(after_id + 1, ROWS + 1))


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_resuming_after_the_last_id_received_gives_exactly_the_rest(client, auth, table_rows, endpoint):
    first = parse("csv", await _body(client, auth, f"/{endpoint}?format=csv&limit=1234"))
    rest = parse("csv", await _body(client, auth, f"/{endpoint}?format=csv&after_id={first[-1]['id']}"))
    assert first + rest == table_rows


@pytest.mark.parametrize("page_size", [1, 10_000])
async def test_chunked_accepts_page_size_within_bounds(client, auth, page_size):
    body = await _body(client, auth, f"/chunked?page_size={page_size}&limit=300")
    assert ids("ndjson", body) == list(range(1, 301))


# --- bad input ------------------------------------------------------------------------------------

BAD_QUERIES = [
    ("standard", "limit=abc", "limit"),
    ("chunked", "limit=abc", "limit"),
    ("standard", "limit=-1", "limit"),
    ("chunked", "limit=1.5", "limit"),
    ("standard", f"limit={2**64}", "limit"),
    ("chunked", "limit=", "limit"),
    ("standard", "after_id=-1", "after_id"),
    ("chunked", "after_id=x", "after_id"),
    ("chunked", f"after_id={2**63}", "after_id"),
    ("chunked", "page_size=0", "page_size"),
    ("chunked", "page_size=10001", "page_size"),
    ("chunked", "page_size=-5", "page_size"),
    ("chunked", "page_size=ten", "page_size"),
    ("standard", "page_size=100", "page_size"),
    ("standard", "limit=1&limit=2", "limit"),
    ("chunked", "after_id=1&after_id=1", "after_id"),
    ("chunked", "format=json&format=csv", "format"),
    ("standard", "format=xml", "format"),
    ("chunked", "format=", "format"),
    ("standard", "colour=red", "colour"),
    ("chunked", "limit=5&offset=10", "offset"),
]


@pytest.mark.parametrize(("endpoint", "query", "parameter"), BAD_QUERIES)
async def test_bad_parameter_is_a_400_naming_it(client, auth, endpoint, query, parameter):
    status, headers, body = await _get(client, f"/{endpoint}?{query}", auth)
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    error = json.loads(body)
    assert error["error"] and parameter in error["detail"]


# --- content negotiation --------------------------------------------------------------------------

NEGOTIATION = [
    (None, "ndjson"),
    ("*/*", "ndjson"),
    ("application/x-ndjson", "ndjson"),
    ("text/csv", "csv"),
    ("application/json", "json"),
    ("text/plain", "text"),
    ("text/csv;q=0.5, application/json", "json"),
    ("application/json;q=0.2, text/plain;q=0.9", "text"),
    ("text/*;q=0.1, application/json;q=0.05", "csv"),
    ("application/xml, text/csv;q=0.3", "csv"),
    ("text/html, */*;q=0.1", "ndjson"),
]


@pytest.mark.parametrize(("accept", "fmt"), NEGOTIATION)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_accept_header_chooses_the_format(client, auth, endpoint, accept, fmt):
    headers = dict(auth) if accept is None else {**auth, "Accept": accept}
    status, response_headers, body = await _get(client, f"/{endpoint}?limit=3", headers)
    assert status == 200
    assert response_headers["Content-Type"] == CONTENT_TYPES[fmt]
    assert ids(fmt, body) == [1, 2, 3]


@pytest.mark.parametrize("accept", ["text/csv", "image/png"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_format_parameter_wins_over_accept(client, auth, endpoint, accept):
    status, headers, body = await _get(client, f"/{endpoint}?format=json&limit=2", {**auth, "Accept": accept})
    assert status == 200
    assert headers["Content-Type"] == CONTENT_TYPES["json"]
    assert ids("json", body) == [1, 2]


@pytest.mark.parametrize("accept", ["image/png", "application/xml, text/html", "text/csv;q=0"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_unacceptable_accept_is_a_406_listing_the_offered_types(client, auth, endpoint, accept):
    status, headers, body = await _get(client, f"/{endpoint}", {**auth, "Accept": accept})
    assert status == 406
    assert headers["Content-Type"].startswith("application/json")
    error = json.loads(body)
    assert error["error"]
    for content_type in ("application/x-ndjson", "text/csv", "application/json", "text/plain"):
        assert content_type in error["detail"]


async def test_unknown_route_is_a_json_404(client, auth):
    status, headers, body = await _get(client, "/nowhere", auth)
    assert status == 404
    assert headers["Content-Type"].startswith("application/json")
    assert json.loads(body)["error"]
