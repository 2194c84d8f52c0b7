"""Every format from both endpoints, read back with the standard library, equals the table as asyncpg reads it."""

from __future__ import annotations

import datetime as dt

import pytest

from tests.support.bodies import COLUMNS, CONTENT_TYPES, ENDPOINTS, FORMATS, parse, raw_rows
from tests.support.pg import ROWS

# The characters every 101st label carries, each of which some format must escape or quote.
ESCAPED_CHARACTERS = (",", '"', "\\", "\t", "\n")


async def _body(client, auth, endpoint: str, fmt: str, query: str = "") -> bytes:
    response = await client.get(f"/{endpoint}?format={fmt}{query}", headers=auth)
    assert response.status == 200, await response.text()
    return await response.read()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_body_parses_back_to_every_row_of_the_table(client, auth, table_rows, endpoint, fmt):
    rows = parse(fmt, await _body(client, auth, endpoint, fmt))
    assert len(rows) == ROWS
    assert rows == table_rows


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_escaping_rows_survive_the_round_trip(client, auth, table_rows, endpoint, fmt):
    tricky = [row for row in table_rows if row["id"] % 101 == 0]
    assert len(tricky) == ROWS // 101
    label = tricky[0]["label"]
    assert all(ch in label for ch in ESCAPED_CHARACTERS) and any(ord(ch) > 127 for ch in label)
    by_id = {row["id"]: row for row in parse(fmt, await _body(client, auth, endpoint, fmt))}
    assert [by_id[row["id"]] for row in tricky] == tricky


@pytest.mark.parametrize("fmt", ["ndjson", "json"])
async def test_json_objects_keep_column_order(client, auth, fmt):
    rows = raw_rows(fmt, await _body(client, auth, "chunked", fmt, "&limit=3"))
    assert [list(row) for row in rows] == [COLUMNS] * 3


@pytest.mark.parametrize("fmt", ["csv", "text"])
async def test_csv_layouts_start_with_the_column_header(client, auth, fmt):
    body = await _body(client, auth, "chunked", fmt, "&limit=1")
    assert body.split(b"\n", 1)[0] == b"id,x,y,label,value,recorded_at"


async def test_text_is_the_csv_layout(client, auth):
    assert await _body(client, auth, "standard", "text") == await _body(client, auth, "standard", "csv")


@pytest.mark.parametrize("fmt", FORMATS)
async def test_timestamps_are_written_in_utc(client, auth, fmt):
    for row in raw_rows(fmt, await _body(client, auth, "chunked", fmt, "&limit=5")):
        assert dt.datetime.fromisoformat(row["recorded_at"]).utcoffset() == dt.timedelta(0)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_content_type_names_the_format(client, auth, endpoint, fmt):
    response = await client.get(f"/{endpoint}?format={fmt}&limit=1", headers=auth)
    assert response.status == 200
    assert response.headers["Content-Type"] == CONTENT_TYPES[fmt]


EMPTY_BODIES = {
    "ndjson": b"",
    "csv": b"id,x,y,label,value,recorded_at\n",
    "json": None,  # any valid JSON text for []
    "text": b"id,x,y,label,value,recorded_at\n",
}


@pytest.mark.parametrize("query", ["limit=0", f"after_id={ROWS}", f"after_id={ROWS + 1000}"])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_empty_result_is_a_valid_body(client, auth, endpoint, fmt, query):
    body = await _body(client, auth, endpoint, fmt, "&" + query)
    assert raw_rows(fmt, body) == []
    if EMPTY_BODIES[fmt] is not None:
        assert body == EMPTY_BODIES[fmt]
