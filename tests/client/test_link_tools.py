"""A link read by the tools analysts use, each given the URL alone, no header: polars' and pandas'
read_csv(url) and DuckDB's read_csv('url') (its httpfs extension from the wheel, no secret), and the link
the command line prints works the same."""

from __future__ import annotations

import asyncio
import importlib.resources
from collections.abc import Iterator

import duckdb
import pandas as pd
import polars as pl
import pytest

from streaming_api.links import sign
from streaming_api.tokens import load_keys
from tests.support.cli import run_cli
from tests.support.pg import ROWS


@pytest.fixture
def duck(tmp_path) -> Iterator[duckdb.DuckDBPyConnection]:
    """DuckDB with httpfs loaded from the duckdb-extension-httpfs wheel (never downloaded), and no secret."""
    version = f"v{duckdb.__version__}"
    httpfs = importlib.resources.files("duckdb_extension_httpfs") / "extensions" / version / "httpfs.duckdb_extension"
    config = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "extension_directory": str(tmp_path / "duckdb_extensions"),
    }
    connection = duckdb.connect(config=config)
    connection.sql(f"LOAD '{httpfs}'")
    try:
        yield connection
    finally:
        connection.close()


@pytest.fixture
def make_link(server, settings):
    return lambda endpoint: str(
        server.make_url(sign(load_keys(settings), f"/{endpoint}/points.csv?columns=id,label,value&limit=1500", 600, {}))
    )


@pytest.fixture
def link_url(make_link):
    return make_link("chunked")


@pytest.mark.parametrize("endpoint", ["chunked", "standard"])
async def test_polars_reads_a_link_with_no_header(make_link, endpoint):
    # polars' own HTTP reader asks for byte ranges, which no export serves: with pyarrow it GETs the URL once.
    frame = await asyncio.to_thread(pl.read_csv, make_link(endpoint), use_pyarrow=True)
    assert frame.columns == ["id", "label", "value"]
    assert frame["id"].to_list() == list(range(1, 1501))


async def test_pandas_reads_a_link_with_no_header(link_url):
    frame = await asyncio.to_thread(pd.read_csv, link_url)
    assert list(frame.columns) == ["id", "label", "value"]
    assert frame["id"].tolist() == list(range(1, 1501))


async def test_duckdb_reads_a_link_with_no_header(link_url, duck):
    rows = await asyncio.to_thread(lambda: duck.sql(f"SELECT count(*), sum(id) FROM read_csv('{link_url}')").fetchall())
    assert rows == [(1500, 1500 * 1501 // 2)]


async def test_the_link_the_command_line_prints_opens_its_export(server, settings, tmp_path, jwt_secret):
    result = await asyncio.to_thread(
        run_cli,
        ["link", "/chunked/points.csv?columns=id", "--ttl", "60", "--base-url", str(server.make_url(""))],
        tmp_path,
        jwt_secret=jwt_secret,
    )
    assert result.returncode == 0, result.stderr
    frame = await asyncio.to_thread(pl.read_csv, result.stdout.strip(), use_pyarrow=True)
    assert frame["id"].to_list() == list(range(1, ROWS + 1))
