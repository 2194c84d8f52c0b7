"""The analysts' tools on the type contract: polars, pandas and DuckDB read the corpus (every type) from
the Arrow stream with the database's values, read the text formats' plain columns with the right types,
and type a double as a float in every format (docs/types.md, "What each tool reads")."""

from __future__ import annotations

import io
import math
from decimal import Decimal
from urllib.parse import quote

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.ipc
import pytest

from streaming_api.web.app import create_app
from tests.support import corpus

PATH = quote(corpus.URL_NAME, safe="")
# What every tool reads from the text formats as typed values (the rest is text or JSON: docs/types.md).
PLAIN = ("tenant", "seq", "small", "whole", "big", "flag", "words", "day", "moment")


@pytest.fixture
async def corpus_client(aiohttp_client, settings, corpus_url):
    return await aiohttp_client(create_app(settings.replace(database_url=corpus_url, tables=corpus.TABLES)))


async def _get(client, auth, path: str) -> bytes:
    response = await client.get(path, headers=auth)
    assert response.status == 200, await response.text()
    return await response.read()


def _same(got: object, want: object) -> bool:
    if isinstance(want, float) and isinstance(got, float) and math.isnan(want):
        return math.isnan(got)
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(_same(a, b) for a, b in zip(got, want, strict=True))
    return got == want


def _arrow_expected(row: dict, column: str) -> object:
    """The database's value as the Arrow column holds it (docs/types.md: NaN in a decimal and the
    infinities of dates and times are NULL; json as its text; a range as its text)."""
    value = row[column]
    if column == "fixed_point" and isinstance(value, Decimal) and value.is_nan():
        return None
    if column in ("day", "moment", "instant") and row[f"{'day' if column == 'day' else column} text"] in (
        "infinity",
        "-infinity",
    ):
        return None
    if column == "exact":
        return None if value is None else str(value) if not value.is_nan() else "NaN"
    if column == "span_of":
        return row["span_of text"]
    return value


def _compare(got_rows: list[dict], corpus_rows: list[dict], columns: list[str], normalize) -> None:
    wrong = [
        (want["tenant"], want["seq"], column, got[column], _arrow_expected(want, column))
        for got, want in zip(got_rows, corpus_rows, strict=True)
        for column in columns
        if not _same(normalize(column, got[column]), _arrow_expected(want, column))
    ]
    assert not wrong, "\n".join(map(repr, wrong))


# Columns read by value below; json, the interval and numeric's text are checked in tests/web/test_types.py.
COMPARED = [
    "tenant", "seq", "small", "whole", "big", "exact", "fixed_point", "single", "double", "flag", "words",
    "short", "padded", "raw", "day", "clock", "moment", "instant", "ints", "texts", "doubles", "mood",
    "positive", "a$1", 'with space and "quote"', "Zürich ✓", "span_of",
]  # fmt: skip


def _plain(column: str, value: object) -> object:
    return value


async def test_polars_reads_the_arrow_stream_with_the_databases_values(corpus_client, auth, corpus_rows):
    # polars cannot import month_day_nano intervals (as from ADBC): the interval is left out.
    body = await _get(corpus_client, auth, f"/chunked/{PATH}.arrow?page_size=3")
    table = pa.ipc.open_stream(body).read_all().drop_columns(["span"])
    frame = pl.from_arrow(table)
    assert frame.schema["single"] == pl.Float32 and frame.schema["fixed_point"] == pl.Decimal(12, 3)
    _compare(frame.to_dicts(), corpus_rows, COMPARED, _plain)


async def test_pandas_reads_the_arrow_stream_with_the_databases_values(corpus_client, auth, corpus_rows):
    body = await _get(corpus_client, auth, f"/chunked/{PATH}.arrow")
    frame = pa.ipc.open_stream(body).read_pandas(types_mapper=pd.ArrowDtype)
    rows = [{column: frame[column].iloc[i] for column in frame.columns} for i in range(len(frame))]

    def normalize(column: str, value: object) -> object:
        if value is pd.NA:
            return None
        if isinstance(value, pd.Timestamp):
            return value.to_pydatetime()
        return value.tolist() if hasattr(value, "tolist") else value

    _compare(rows, corpus_rows, COMPARED, normalize)


async def test_duckdb_reads_the_arrow_stream_with_the_databases_values(corpus_client, auth, corpus_rows):
    body = await _get(corpus_client, auth, f"/standard/{PATH}.arrow")
    reader = pa.ipc.open_stream(body)  # noqa: F841 (DuckDB finds it by its Python name)
    relation = duckdb.sql("SELECT * FROM reader")
    rows = [dict(zip(relation.columns, record, strict=True)) for record in relation.fetchall()]

    def normalize(column: str, value: object) -> object:
        if column == "exact" and value is not None:
            return str(value) if str(value) != "nan" else "NaN"
        return value

    compared = [column for column in COMPARED if column not in ("raw",)]  # DuckDB's BLOB: bytes as well
    _compare(rows, corpus_rows, compared, normalize)
    assert all(_same(row["raw"], want["raw"]) for row, want in zip(rows, corpus_rows, strict=True))


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
async def test_every_tool_reads_the_plain_columns_of_the_text_formats(corpus_client, auth, corpus_rows, fmt, tmp_path):
    columns = ",".join(PLAIN)
    body = await _get(corpus_client, auth, f"/chunked/{PATH}.{fmt}?columns={quote(columns)}")
    finite = [row for row in corpus_rows if row["day text"] != "infinity"]
    keep = [i for i, row in enumerate(corpus_rows) if row["day text"] != "infinity"]
    path = tmp_path / f"corpus.{fmt}"
    path.write_bytes(body)
    read = {
        "polars": (pl.read_csv if fmt == "csv" else pl.read_ndjson)(io.BytesIO(body)),
        "pandas": pd.read_csv(io.BytesIO(body)) if fmt == "csv" else pd.read_json(io.BytesIO(body), lines=True),
        "duckdb": duckdb.sql(f"SELECT * FROM {'read_csv' if fmt == 'csv' else 'read_json'}('{path}')"),
    }
    counts = {"polars": read["polars"].height, "pandas": len(read["pandas"]), "duckdb": len(read["duckdb"].fetchall())}
    assert set(counts.values()) == {corpus.ROWS}
    # The numbers are numbers in every tool, ints as ints.
    assert read["polars"].schema["big"] == pl.Int64 and str(read["duckdb"].types[4]) in ("BIGINT", "HUGEINT")
    assert pd.api.types.is_numeric_dtype(read["pandas"]["big"])
    polars_rows = read["polars"].to_dicts()
    for column in ("tenant", "seq", "big", "words"):
        got = [polars_rows[i][column] for i in keep]
        want = [row[column] for row in finite]
        assert [("" if g is None else g) for g in got] == [("" if w is None else w) for w in want], column


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
async def test_every_tool_types_a_double_as_a_float(client, auth, fmt, tmp_path):
    """points' x and y hold integral doubles (0.0, 1.0...): written with their fraction, every tool
    types them as floats, as the database does."""
    body = await _get(client, auth, f"/chunked.{fmt}?limit=500&columns=id,x,y,value")
    path = tmp_path / f"points.{fmt}"
    path.write_bytes(body)
    frame = pl.read_csv(io.BytesIO(body)) if fmt == "csv" else pl.read_ndjson(io.BytesIO(body))
    assert [frame.schema[name] for name in ("x", "y", "value")] == [pl.Float64] * 3
    # read_json's default turns integral floats into ints whatever the JSON says; dtype=False keeps its types.
    pandas = pd.read_csv(io.BytesIO(body)) if fmt == "csv" else pd.read_json(io.BytesIO(body), lines=True, dtype=False)
    assert [str(pandas[name].dtype) for name in ("x", "y")] == ["float64", "float64"]
    reader = "read_csv" if fmt == "csv" else "read_json"
    types = duckdb.sql(f"SELECT * FROM {reader}('{path}')").types
    assert [str(t) for t in types[1:3]] == ["DOUBLE", "DOUBLE"]
