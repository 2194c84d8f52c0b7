"""The data tools analysts use, on the service's URLs as they are: DuckDB (its httpfs extension from PyPI,
the token through a secret) reads /chunked.csv and /chunked.ndjson with one export per read, and polars,
pandas and pyarrow read the same bytes, each in the README's one or two lines."""

from __future__ import annotations

import asyncio
import importlib.resources
import logging
import re
import urllib.request
from collections.abc import Iterator

import aiohttp
import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.ipc
import pytest

from tests.support.pg import ROWS

ACCESS_LOG = "streaming_api.access"


def _httpfs() -> str:
    """The httpfs extension the duckdb-extension-httpfs wheel ships for this duckdb (never downloaded)."""
    version = f"v{duckdb.__version__}"
    path = importlib.resources.files("duckdb_extension_httpfs") / "extensions" / version / "httpfs.duckdb_extension"
    return str(path)


@pytest.fixture
def duck(token, tmp_path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection that loads httpfs from the wheel, and sends the token with every request."""
    config = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "extension_directory": str(tmp_path / "duckdb_extensions"),
    }
    connection = duckdb.connect(config=config)
    connection.sql(f"LOAD '{_httpfs()}'")
    connection.sql(f"CREATE SECRET api (TYPE http, EXTRA_HTTP_HEADERS MAP {{'Authorization': 'JWT {token}'}})")
    try:
        yield connection
    finally:
        connection.close()


def _exports(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The access log's GETs that sent rows (HEADs and refused requests run no export)."""
    lines = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOG]
    return [line for line in lines if line.startswith("GET ") and int(re.search(r" rows=(\d+)", line)[1]) > 0]


async def _sql(connection: duckdb.DuckDBPyConnection, query: str) -> list[tuple]:
    # DuckDB blocks: off the event loop, which runs the server.
    return await asyncio.to_thread(lambda: connection.sql(query).fetchall())


@pytest.mark.parametrize(("function", "path"), [("read_csv", "/chunked.csv"), ("read_json", "/chunked.ndjson")])
async def test_duckdb_reads_a_url_with_one_export_per_read(server, duck, caplog, function, path):
    url = server.make_url(path)
    with caplog.at_level(logging.INFO, logger=ACCESS_LOG):
        [(rows, ids)] = await _sql(duck, f"SELECT count(*), sum(id) FROM {function}('{url}')")
    assert (rows, ids) == (ROWS, ROWS * (ROWS + 1) // 2)
    assert len(_exports(caplog)) == 1


async def test_polars_and_duckdb_read_the_same_urls_bytes(server, duck, token):
    url = server.make_url("/chunked.csv")
    async with aiohttp.ClientSession() as session, session.get(url, headers={"Authorization": f"JWT {token}"}) as r:
        body = await r.read()
    by_polars = pl.read_csv(body)
    by_duckdb = await asyncio.to_thread(lambda: duck.sql(f"SELECT * EXCLUDE recorded_at FROM read_csv('{url}')").pl())
    assert by_polars.drop("recorded_at").equals(by_duckdb, null_equal=False)


def _open(url: str, token: str):
    """The README's request: the URL, with the token in a header."""
    return urllib.request.urlopen(urllib.request.Request(url, headers={"Authorization": f"JWT {token}"}))


async def test_the_readme_lines_read_the_arrow_stream(server, token):
    url = str(server.make_url("/chunked.arrow"))

    def read_all() -> tuple[pa.Table, pl.DataFrame, pd.DataFrame, int]:
        table = pa.ipc.open_stream(_open(url, token)).read_all()
        frame = pl.read_ipc_stream(_open(url, token))
        pandas = pa.ipc.open_stream(_open(url, token)).read_pandas()
        reader = pa.ipc.open_stream(_open(url, token))  # noqa: F841 (DuckDB finds it by name)
        [(rows,)] = duckdb.sql("SELECT count(*) FROM reader").fetchall()
        return table, frame, pandas, rows

    table, frame, pandas, duckdb_rows = await asyncio.to_thread(read_all)
    assert table.num_rows == frame.height == len(pandas) == duckdb_rows == ROWS
    assert frame.equals(pl.from_arrow(table))
    assert pandas.equals(table.to_pandas())


async def test_pandas_reads_the_csv_url_with_the_token_in_its_storage_options(server, token):
    url = str(server.make_url("/chunked.csv"))
    frame = await asyncio.to_thread(pd.read_csv, url, storage_options={"Authorization": f"JWT {token}"})
    assert frame["id"].tolist() == list(range(1, ROWS + 1))


async def test_duckdb_reads_a_filtered_url_as_the_filter_means(server, duck, table_rows):
    url = server.make_url("/chunked.csv").with_query({"value": "lt.10", "x": "gte.500"})
    [(rows, ids)] = await _sql(duck, f"SELECT count(*), sum(id) FROM read_csv('{url}')")
    kept = [row["id"] for row in table_rows if row["value"] < 10 and row["x"] >= 500]
    assert (rows, ids) == (len(kept), sum(kept)) and 0 < rows < ROWS
