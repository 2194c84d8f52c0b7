"""URLs that data tools open as they are: columns=, the format named by the path's suffix, a file name,
and how many rows to expect, in the headers."""

from __future__ import annotations

import csv
import io
import json

import pyarrow.ipc
import pytest

from streaming_api.web import sinks
from tests.support.bodies import COLUMNS, ENDPOINTS, FORMATS, raw_rows
from tests.support.pg import ROWS

SUFFIXES = {"ndjson": "ndjson", "csv": "csv", "json": "json", "text": "txt", "arrow": "arrow"}


async def _get(client, path: str, auth: dict[str, str]):
    response = await client.get(path, headers=auth)
    return response, await response.read()


def _names(fmt: str, body: bytes) -> list[str]:
    """The columns a body carries, in order, read by the standard library (or pyarrow)."""
    if fmt == "arrow":
        return pyarrow.ipc.open_stream(body).schema.names
    if fmt in ("csv", "text"):
        return next(csv.reader(io.StringIO(body.decode())))
    first = json.loads(body.split(b"\n")[0]) if fmt == "ndjson" else json.loads(body)[0]
    return list(first)


@pytest.mark.parametrize("fmt", [*FORMATS, "arrow"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_columns_selects_and_orders_the_columns_in_every_format(client, auth, endpoint, fmt):
    response, body = await _get(client, f"/{endpoint}?format={fmt}&columns=value,id,label&limit=7", auth)
    assert response.status == 200
    assert _names(fmt, body) == ["value", "id", "label"]


async def test_columns_values_equal_the_full_rows(client, auth):
    _, full = await _get(client, "/chunked?format=csv", auth)
    _, narrow = await _get(client, "/chunked?format=csv&columns=label,x", auth)
    expected = [{"label": row["label"], "x": row["x"]} for row in raw_rows("csv", full)]
    got = list(csv.DictReader(io.StringIO(narrow.decode(), newline="")))
    assert got == expected


@pytest.mark.parametrize(
    ("value", "named"),
    [("id,nope", "'nope'"), ("id,,x", "an empty name"), ("id,x,id", "'id' is named twice"), ("", "an empty name")],
)
async def test_a_bad_columns_value_is_a_400_naming_it(client, auth, value, named):
    response, body = await _get(client, f"/chunked?columns={value}", auth)
    assert response.status == 400
    problem = json.loads(body)
    assert problem["parameter"] == "columns"
    assert named in problem["detail"]


@pytest.mark.parametrize("fmt", [*FORMATS, "arrow"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_the_path_suffix_names_the_format_and_the_download_its_file(client, auth, endpoint, fmt):
    suffixed, body = await _get(client, f"/{endpoint}.{SUFFIXES[fmt]}?limit=5", auth)
    _, plain = await _get(client, f"/{endpoint}?format={fmt}&limit=5", auth)
    assert suffixed.status == 200
    assert body == plain
    disposition = suffixed.headers["Content-Disposition"]
    assert f'filename="points.{SUFFIXES[fmt]}"' in disposition
    assert disposition.startswith("inline" if fmt == "text" else "attachment")


async def test_a_format_parameter_that_contradicts_the_suffix_is_a_400(client, auth):
    response, body = await _get(client, "/chunked.csv?format=json", auth)
    assert response.status == 400
    assert json.loads(body)["parameter"] == "format"


async def test_an_unknown_suffix_is_a_404(client, auth):
    response, _ = await _get(client, "/chunked.xlsx", auth)
    assert response.status == 404


# (query, rows sent, whether /chunked knows the count exactly before its first byte)
COUNTS = [
    ("", ROWS, False),
    ("limit=10", 10, True),
    ("after_id=2000", ROWS - 2000, False),
    ("after_id=2000&limit=100", 100, True),
    ("after_id=2300&limit=1000", ROWS - 2300, True),
    (f"after_id={ROWS}", 0, False),
    ("limit=0", 0, True),
]


@pytest.fixture
def patient_count(monkeypatch: pytest.MonkeyPatch) -> None:
    """The first page's headers wait for the count a millisecond at most: long enough on a quiet machine,
    not on a busy one. These tests are about the count's value, so they let it wait."""
    monkeypatch.setattr(sinks, "COUNT_WAIT_SECONDS", 5.0)


@pytest.mark.parametrize(("query", "rows", "exact"), COUNTS)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_the_row_count_header_says_how_many_rows_are_sent(
    client, auth, endpoint, query, rows, exact, patient_count
):
    """Exact when the body is buffered, the limit is small or nothing follows after_id; otherwise an
    estimate from the table's statistics (exact here: the test table's ids have no gaps)."""
    response, body = await _get(client, f"/{endpoint}?format=csv&{query}", auth)
    assert len(raw_rows("csv", body)) == rows
    if endpoint == "standard" or exact:
        assert int(response.headers["X-Row-Count"]) == rows
        assert "X-Row-Count-Estimate" not in response.headers
    else:
        assert "X-Row-Count" not in response.headers
        assert abs(int(response.headers["X-Row-Count-Estimate"]) - rows) <= rows * 0.02


async def test_a_count_too_long_to_take_before_the_first_byte_is_an_estimate(
    big_settings, aiohttp_client, auth, patient_count
):
    from streaming_api.web.app import create_app

    client = await aiohttp_client(create_app(big_settings))
    response = await client.get("/chunked?format=csv&after_id=10000", headers=auth)
    body = await response.read()
    estimate = int(response.headers["X-Row-Count-Estimate"])
    assert "X-Row-Count" not in response.headers
    sent = body.count(b"\n") - 1 - body.count(b'"Z')  # the escaping rows' labels hold one newline each
    assert abs(estimate - sent) <= sent * 0.1


async def test_head_says_how_many_rows_a_get_would_carry(client, auth):
    response = await client.head("/chunked.csv?limit=77", headers=auth)
    assert response.status == 200
    assert response.headers["X-Row-Count"] == "77"


def test_columns_are_the_service_s_own():
    from streaming_api.db.schema import COLUMNS as SERVICE_COLUMNS

    assert tuple(COLUMNS) == SERVICE_COLUMNS


async def test_every_data_response_carries_a_count_even_when_counting_never_ends(client, auth, monkeypatch):
    """The exact count stuck (a busy database, say): the first byte does not wait for it, and the headers
    carry the catalog's estimate instead, never nothing."""
    import asyncio

    from streaming_api.export import count

    async def stuck(lanes, export):
        await asyncio.Event().wait()

    monkeypatch.setattr(count, "expected", stuck)
    for query in ("", "limit=10", "after_id=2000", "after_id=2000&limit=100"):
        response = await client.get(f"/chunked?format=csv&{query}", headers=auth)
        assert response.status == 200
        assert "X-Row-Count-Estimate" in response.headers or "X-Row-Count" in response.headers, query
        await response.read()


@pytest.mark.parametrize("query", ["", "limit=10", "after_id=2000", "after_id=2300&limit=1000", "columns=id"])
async def test_head_on_standard_gives_its_gets_exact_count(client, auth, query):
    head = await client.head(f"/standard.csv?{query}", headers=auth)
    get = await client.get(f"/standard.csv?{query}", headers=auth)
    await get.read()
    assert head.status == get.status == 200
    for name in ("X-Row-Count", "X-Key", "Content-Type", "Content-Disposition"):
        assert head.headers.get(name) == get.headers.get(name), name
    assert "X-Row-Count-Estimate" not in head.headers


@pytest.mark.parametrize("query", ["limit=10", "after_id=2300&limit=1000"])
async def test_head_on_chunked_gives_its_gets_count(client, auth, query, patient_count):
    head = await client.head(f"/chunked.csv?{query}", headers=auth)
    get = await client.get(f"/chunked.csv?{query}", headers=auth)
    await get.read()
    assert head.headers["X-Row-Count"] == get.headers["X-Row-Count"]


async def test_head_on_standard_over_its_row_cap_is_its_gets_413(aiohttp_client, settings, auth):
    from streaming_api.web.app import create_app

    client = await aiohttp_client(create_app(settings.replace(standard_max_rows=100)))
    head = await client.head("/standard", headers=auth)
    get = await client.get("/standard", headers=auth)
    assert head.status == get.status == 413
