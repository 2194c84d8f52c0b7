"""The type contract (docs/types.md): every type, NULLs, NaN and the infinities, every escape, in every
format from both endpoints, read back with Python's json and csv and with pyarrow, equals the database's
own values column by column; and the bytes do not depend on the database's output settings."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import math
import re
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest

from streaming_api.settings import Settings
from streaming_api.web.app import create_app
from tests.support import corpus

ENDPOINTS = ("chunked", "standard")
PATH = quote(corpus.URL_NAME, safe="")

# The rule each column falls under.
KINDS = {
    "tenant": "text", "seq": "int", "small": "int", "whole": "int", "big": "int", "exact": "numeric",
    "fixed_point": "numeric", "single": "float4", "double": "float8", "flag": "bool", "words": "text",
    "short": "text", "padded": "text", "uid": "uuid", "doc": "json", "docb": "json", "raw": "bytea",
    "day": "date", "clock": "time", "moment": "timestamp", "instant": "timestamp", "span": "interval",
    "ints": "list", "texts": "list", "doubles": "float list", "mood": "text", "positive": "int", "a$1": "text",
    'with space and "quote"': "text", "Zürich ✓": "int", "span_of": "text form",
}  # fmt: skip


@pytest.fixture(scope="session")
def plain_corpus_url(database_url: str) -> str:
    return asyncio.run(corpus.database(database_url, "streaming_api_corpus_plain", odd=False))


def _settings(settings: Settings, url: str) -> Settings:
    return settings.replace(database_url=url, tables=corpus.TABLES, catalog_refresh=0)


@pytest.fixture
async def corpus_client(aiohttp_client, settings: Settings, corpus_url: str):
    return await aiohttp_client(create_app(_settings(settings, corpus_url)))


async def _body(client, auth, endpoint: str, fmt: str, query: str = "", path: str = PATH) -> bytes:
    response = await client.get(f"/{endpoint}/{path}?format={fmt}{query}", headers=auth)
    assert response.status == 200, await response.text()
    return await response.read()


# --- reading back -----------------------------------------------------------------------------------

_ISO_DURATION = re.compile(
    r"P(?:(?P<Y>-?\d+)Y)?(?:(?P<Mo>-?\d+)M)?(?:(?P<D>-?\d+)D)?"
    r"(?:T(?:(?P<H>-?\d+)H)?(?:(?P<Mi>-?\d+)M)?(?:(?P<S>-?[\d.]+)S)?)?"
)


def _interval(text: str) -> tuple[int, int, int]:
    """An ISO 8601 duration as PostgreSQL writes one, as (months, days, microseconds)."""
    match = _ISO_DURATION.fullmatch(text)
    assert match, text
    part = {name: match.group(name) or "0" for name in ("Y", "Mo", "D", "H", "Mi", "S")}
    micros = int(part["H"]) * 3_600_000_000 + int(part["Mi"]) * 60_000_000 + round(Decimal(part["S"]) * 1_000_000)
    return int(part["Y"]) * 12 + int(part["Mo"]), int(part["D"]), micros


def _same_float(got: Any, want: float | None, single: bool = False) -> bool:
    if want is None:
        return got is None or got == ""  # CSV writes NULL as an empty field
    value = float(got)  # str from JSON or CSV ("NaN", "Infinity" too), or a float from Arrow
    if math.isnan(want):
        return math.isnan(value)
    return np.float32(value) == np.float32(want) if single else value == want


def _moment(got: Any, row: dict, column: str) -> bool:
    text = row[f"{column} text"]
    if row[column] is None:
        return got is None
    if text in ("infinity", "-infinity"):
        return got == text  # text formats keep it; Arrow has no infinite time (see the Arrow check)
    return dt.datetime.fromisoformat(got) == row[column]


def text_matches(kind: str, got: Any, row: dict, column: str) -> bool:
    """A value from JSON (parsed with parse_float=str) or CSV (a string) against the database's."""
    want = row[column]
    if kind in ("float4", "float8"):
        return _same_float(got, want, single=kind == "float4")
    if want is None:
        return got is None or got == ""
    checks: dict[str, Callable[[], bool]] = {
        "int": lambda: int(got) == want,
        "numeric": lambda: got == "NaN" if want.is_nan() else Decimal(got) == want,
        "bool": lambda: got in (want, "true" if want else "false"),
        "text": lambda: got == want,
        "uuid": lambda: got == str(want),
        "json": lambda: (
            (json.loads(got, parse_float=str) if isinstance(got, str) else got) == json.loads(want, parse_float=str)
            if not isinstance(got, str) or _is_json_text(got)
            else json.loads(want, parse_float=str) == got
        ),
        "bytea": lambda: got == "\\x" + want.hex(),
        "date": lambda: got == row["day text"] if row["day text"] == "infinity" else got == want.isoformat(),
        "time": lambda: dt.time.fromisoformat(got) == want,
        "timestamp": lambda: _moment(got, row, column),
        "interval": lambda: _interval(got) == want,
        "list": lambda: (json.loads(got) if isinstance(got, str) else got) == want,
        "float list": lambda: all(
            _same_float(a, b) for a, b in zip(json.loads(got) if isinstance(got, str) else got, want, strict=True)
        ),
        "text form": lambda: got == row[f"{column} text"],
    }
    return checks[kind]()


def _is_json_text(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def arrow_matches(kind: str, got: Any, row: dict, column: str) -> bool:
    """A value from pyarrow's to_pylist against the database's (docs/types.md: the Arrow column)."""
    want = row[column]
    if kind in ("float4", "float8"):
        return _same_float(got, want, single=kind == "float4")
    if want is None:
        return got is None
    if kind == "numeric":
        if want.is_nan():
            return got in (None, "NaN")  # a decimal128 has no NaN: NULL; the text of an unbounded numeric keeps it
        return Decimal(got) == want
    if kind in ("date", "timestamp"):
        infinite = row[f"{'day' if kind == 'date' else column} text"] in ("infinity", "-infinity")
        return got is None if infinite else got == want
    if kind == "json":
        return json.loads(got) == json.loads(want)
    if kind == "interval":
        return (got.months, got.days, got.nanoseconds) == (want[0], want[1], want[2] * 1000)
    if kind == "float list":
        return all(_same_float(a, b) for a, b in zip(got, want, strict=True))
    if kind == "text form":
        return got == row[f"{column} text"]
    if kind == "uuid":
        return got == want
    return got == want


def _rows_of(fmt: str, body: bytes) -> list[dict]:
    if fmt == "ndjson":
        return [json.loads(line, parse_float=str) for line in body.split(b"\n")[:-1]]
    if fmt == "json":
        return json.loads(body, parse_float=str)
    reader = csv.reader(io.StringIO(body.decode(), newline=""))
    header = next(reader)
    return [dict(zip(header, record, strict=True)) for record in reader]


def _check(rows: list[dict], want: list[dict], matches: Callable[[str, Any, dict, str], bool]) -> None:
    assert len(rows) == len(want)
    wrong = [
        (row_want["tenant"], row_want["seq"], column, got_row[column], row_want[column])
        for got_row, row_want in zip(rows, want, strict=True)
        for column, kind in KINDS.items()
        if not matches(kind, got_row[column], row_want, column)
    ]
    assert not wrong, "\n".join(map(repr, wrong))


# --- the tests --------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["ndjson", "json", "csv", "text"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_text_formats_read_back_to_the_databases_values(corpus_client, auth, corpus_rows, endpoint, fmt):
    query = "&page_size=2" if endpoint == "chunked" else ""
    rows = _rows_of(fmt, await _body(corpus_client, auth, endpoint, fmt, query))
    assert list(rows[0]) == list(KINDS)  # every column, in the table's order
    _check(rows, corpus_rows, text_matches)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_arrow_reads_back_to_the_databases_values(corpus_client, auth, corpus_rows, endpoint):
    pa = pytest.importorskip("pyarrow")
    query = "&page_size=2" if endpoint == "chunked" else ""
    table = pa.ipc.open_stream(await _body(corpus_client, auth, endpoint, "arrow", query)).read_all()
    _check(table.to_pylist(), corpus_rows, arrow_matches)


async def test_arrow_types_follow_the_contract(corpus_client, auth):
    pa = pytest.importorskip("pyarrow")
    schema = pa.ipc.open_stream(await _body(corpus_client, auth, "chunked", "arrow", "&limit=1")).schema
    types = {field.name: str(field.type) for field in schema}
    assert types == {
        "tenant": "string", "seq": "int32", "small": "int16", "whole": "int32", "big": "int64",
        "exact": "extension<arrow.opaque[storage_type=string, type_name=numeric, vendor_name=PostgreSQL]>",
        "fixed_point": "decimal128(12, 3)", "single": "float", "double": "double", "flag": "bool",
        "words": "string", "short": "string", "padded": "string", "uid": "extension<arrow.uuid>",
        "doc": "extension<arrow.json>", "docb": "extension<arrow.json>", "raw": "binary", "day": "date32[day]",
        "clock": "time64[us]", "moment": "timestamp[us]", "instant": "timestamp[us, tz=UTC]",
        "span": "month_day_nano_interval", "ints": "list<item: int32>", "texts": "list<item: string>",
        "doubles": "list<item: double>", "mood": "string", "positive": "int32", "a$1": "string",
        'with space and "quote"': "string", "Zürich ✓": "int32", "span_of": "string",
    }  # fmt: skip
    assert not schema.field("tenant").nullable and schema.field("words").nullable


async def test_doubles_keep_a_fraction_or_an_exponent_and_nan_is_a_json_string(corpus_client, auth):
    body = await _body(corpus_client, auth, "chunked", "ndjson", "&columns=tenant,seq,single,double")
    lines = body.decode().splitlines()
    assert '"single":1.5,"double":0.1}' in lines[0]
    assert '"single":"NaN","double":"Infinity"}' in lines[2]
    assert '"single":"-Infinity","double":-0.0}' in lines[3]
    assert '"single":3.0,"double":1e+15}' in lines[-1]
    csv_body = (await _body(corpus_client, auth, "chunked", "csv", "&columns=seq,single,double")).decode()
    assert "3,NaN,Infinity\n" in csv_body and "1,3.0,1e+15\n" in csv_body


async def test_csv_tells_null_from_the_empty_string(corpus_client, auth):
    body = (await _body(corpus_client, auth, "chunked", "csv", "&columns=tenant,seq,words,a$1")).decode()
    assert "acme,2,,\n" in body  # NULLs: nothing between the commas
    assert 'acme,3,"",""\n' in body  # empty strings: quoted


async def test_the_output_does_not_depend_on_the_databases_settings(
    aiohttp_client, settings, corpus_url, plain_corpus_url, auth
):
    """TimeZone, DateStyle, IntervalStyle, bytea_output and extra_float_digits set on one database and
    left alone on the other: the same bytes from both, in every format."""
    odd = await aiohttp_client(create_app(_settings(settings, corpus_url)))
    plain = await aiohttp_client(create_app(_settings(settings, plain_corpus_url)))
    for fmt in ("ndjson", "csv", "arrow"):
        assert await _body(odd, auth, "chunked", fmt) == await _body(plain, auth, "chunked", fmt), fmt


@pytest.mark.parametrize("name", ["no_key", "a_view", "parted"])
@pytest.mark.parametrize("fmt", ["ndjson", "csv", "arrow"])
async def test_tables_without_a_key_views_and_partitioned_tables_export_whole(corpus_client, auth, name, fmt):
    path = quote(f"{corpus.SCHEMA}.{name}", safe="")
    chunked = await _body(corpus_client, auth, "chunked", fmt, path=path)
    standard = await _body(corpus_client, auth, "standard", fmt, path=path)
    expected = {"no_key": 250, "a_view": corpus.ROWS, "parted": 300}[name]
    if fmt == "arrow":
        pa = pytest.importorskip("pyarrow")
        read = [pa.ipc.open_stream(body).read_all() for body in (chunked, standard)]
        assert [t.num_rows for t in read] == [expected, expected]
        assert read[0].sort_by(read[0].column_names[0]).equals(read[1].sort_by(read[1].column_names[0]))
    else:
        assert chunked == standard
        assert len(_rows_of(fmt, chunked)) == expected


async def test_a_relation_without_a_key_refuses_after_and_names_no_key(corpus_client, auth):
    response = await corpus_client.get(f"/chunked/{quote(corpus.SCHEMA + '.a_view', safe='')}?after=1", headers=auth)
    assert response.status == 400
    assert (await response.json())["parameter"] == "after"
    response = await corpus_client.get(f"/chunked/{quote(corpus.SCHEMA + '.a_view', safe='')}", headers=auth)
    assert "X-Key" not in response.headers


async def test_a_composite_key_resumes_after_any_row(corpus_client, auth, corpus_rows):
    response = await corpus_client.get(f"/chunked/{PATH}?limit=1", headers=auth)
    assert json.loads(response.headers["X-Key"]) == ["tenant", "seq"]
    for index, row in enumerate(corpus_rows):
        after = quote(json.dumps([row["tenant"], str(row["seq"])]))
        rows = _rows_of("ndjson", await _body(corpus_client, auth, "chunked", "ndjson", f"&after={after}"))
        assert [(r["tenant"], r["seq"]) for r in rows] == [(r["tenant"], r["seq"]) for r in corpus_rows[index + 1 :]]


async def test_a_resume_value_of_the_wrong_type_is_a_400_naming_after(corpus_client, auth):
    after = quote(json.dumps(["acme", "not a number"]))
    response = await corpus_client.get(f"/chunked/{PATH}?after={after}", headers=auth)
    assert response.status == 400
    body = await response.json()
    assert body["parameter"] == "after" and "integer" in body["detail"]


def test_uuid_is_what_the_database_says(corpus_rows):
    assert corpus_rows[0]["uid"] == uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11")


# Where the Arrow types differ from ADBC's PostgreSQL driver for the same columns, on purpose
# (docs/types.md): a numeric with a precision is a decimal (ADBC: numeric's text, an opaque extension);
# a type without an Arrow equivalent is its text form (ADBC: its binary form, opaque).
DIFFERS_FROM_ADBC = {"fixed_point": "decimal128(12, 3)", "span_of": "string"}


async def test_arrow_types_are_adbcs_but_where_docs_types_md_says(corpus_client, auth, corpus_url):
    pa = pytest.importorskip("pyarrow")
    adbc = pytest.importorskip("adbc_driver_postgresql.dbapi")
    ours = pa.ipc.open_stream(await _body(corpus_client, auth, "chunked", "arrow", "&limit=1")).schema

    def read() -> pa.Schema:
        with adbc.connect(corpus_url) as conn, conn.cursor() as cursor:
            cursor.execute(f'SELECT * FROM "{corpus.SCHEMA}"."{corpus.TABLE}" LIMIT 1')
            return cursor.fetch_arrow_table().schema

    theirs = await asyncio.to_thread(read)
    differ = {
        name: str(ours.field(name).type) for name in ours.names if ours.field(name).type != theirs.field(name).type
    }
    assert differ == DIFFERS_FROM_ADBC
