"""The demo tables from the command line: `run.py seed --table`, and a table of a demo table's name with
another shape, which neither seed nor the bench ever overwrites."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.support.cli import error_lines, run_cli
from tests.support.pg import RestartablePostgres, scratch_database


@pytest.fixture
async def user_url(database_url: str) -> AsyncIterator[str]:
    async with scratch_database(database_url, "seed_cli") as url:
        yield url


async def _fetch(url: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(query)
    finally:
        await conn.close()


async def test_seed_table_orders_loads_it_into_database_urls_database_and_says_so(user_url, tmp_path):
    result = run_cli(["seed", "--table", "orders", "--rows", "300"], tmp_path, environment={"DATABASE_URL": user_url})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("orders holds rows 1..300 (loaded in ")
    assert result.stdout.strip().endswith(" s) in DATABASE_URL's database")
    (counted,) = await _fetch(user_url, "SELECT count(*) AS n, min(id) AS low, max(id) AS high FROM orders")
    assert (counted["n"], counted["low"], counted["high"]) == (300, 1, 300)
    # Only what was asked for: no points table made or seeded beside it.
    assert await _fetch(user_url, "SELECT 1 FROM pg_class WHERE relname = 'points'") == []


async def test_seed_table_blobs_defaults_to_its_own_size_not_the_rows_setting(user_url, tmp_path):
    # 2 MB a row: the rows setting (for points) would be far too many. --rows omitted on purpose.
    result = run_cli(["seed", "--table", "blobs"], tmp_path, environment={"DATABASE_URL": user_url}, rows="10")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("blobs holds rows 1..200 ")
    (counted,) = await _fetch(user_url, "SELECT count(*) AS n, sum(octet_length(payload)) AS size FROM blobs")
    assert (counted["n"], counted["size"]) == (200, 400_000_000)


def test_seed_into_the_embedded_database_names_it(tmp_path):
    result = run_cli(["seed", "--table", "orders", "--rows", "10"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith(f"in the embedded PostgreSQL in {tmp_path / 'postgres'}")


def test_seed_an_unknown_table_is_refused_by_name(tmp_path):
    result = run_cli(["seed", "--table", "customers"], tmp_path)
    assert result.returncode == 2
    assert "argument --table: invalid choice: 'customers' (choose from 'points', 'orders', 'blobs')" in result.stderr


@pytest.mark.parametrize("name", ["points", "orders", "blobs"])
async def test_seed_never_overwrites_a_users_table_of_a_demo_tables_name(user_url, tmp_path, name):
    conn = await asyncpg.connect(user_url)
    try:
        await conn.execute(f"CREATE TABLE {name} (id bigint PRIMARY KEY, mine text)")
        await conn.execute(f"INSERT INTO {name} VALUES (1, 'keep me')")
    finally:
        await conn.close()
    result = run_cli(["seed", "--table", name, "--rows", "5"], tmp_path, environment={"DATABASE_URL": user_url})
    assert result.returncode == 2
    assert error_lines(result.stderr) == [
        f"error: the {name} table in this database is not the demo table (its columns: id bigint, mine text): "
        "seeding writes only its own demo table; serve yours with the tables setting, or seed another database"
    ]
    assert [tuple(r) for r in await _fetch(user_url, f"SELECT * FROM {name}")] == [(1, "keep me")]


def test_the_bench_refuses_to_overwrite_a_table_of_a_demo_tables_name_in_its_own_database(tmp_path: Path):
    data_dir = tmp_path / "bench"
    server = RestartablePostgres(data_dir)
    server.start()
    try:
        asyncio.run(_make_foreign_orders(server.url))
    finally:
        server.stop()
    result = run_cli(["bench", "--table", "orders", "--rows", "10", "--data-dir", str(data_dir), "--quiet"], tmp_path)
    assert result.returncode == 2
    assert "error: the orders table in this database is not the demo table (its columns: id integer)" in result.stderr
    assert "Traceback" not in result.stderr
    server.start()
    try:
        assert [tuple(r) for r in asyncio.run(_fetch(server.url, "SELECT id FROM orders"))] == [(42,)]
    finally:
        server.stop()


async def _make_foreign_orders(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute("CREATE TABLE orders (id integer)")
        await conn.execute("INSERT INTO orders VALUES (42)")
    finally:
        await conn.close()
