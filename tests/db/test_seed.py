"""Seeding: the demo tables' shapes, row i's values as the issue defines them, idempotency, and never
overwriting a table of a demo table's name that is not the demo table.

Idempotency tests run in a scratch database created on the session's server, so the shared table stays intact.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator

import asyncpg
import pytest

from streaming_api.db.demo import BLOB_BYTES, BLOBS, DEMO_TABLES, ORDERS, ensure_rows
from streaming_api.db.schema import NotTheDemoTable, row_count, seed
from tests.support.pg import ROWS, scratch_database

EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ESCAPED_CHARACTERS = (",", '"', "\\", "\t", "\n")


@pytest.fixture
async def scratch_url(database_url: str) -> AsyncIterator[str]:
    """A new, empty database on the session's server, dropped afterwards."""
    async with scratch_database(database_url, "seed_test") as url:
        yield url


@pytest.fixture
async def scratch(scratch_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(scratch_url)
    try:
        yield conn
    finally:
        await conn.close()


async def _rows(conn: asyncpg.Connection) -> list[dict]:
    return [dict(record) for record in await conn.fetch("SELECT * FROM points ORDER BY id")]


def _assert_row_follows_the_spec(row: dict) -> None:
    i = row["id"]
    assert row["x"] == (i - 1) % 1000
    assert row["y"] == (i - 1) // 1000
    if i % 101 == 0:
        label = row["label"]
        assert all(ch in label for ch in ESCAPED_CHARACTERS) and any(ord(ch) > 127 for ch in label), label
    else:
        assert row["label"] == f"point-{i}"
    assert 0 <= row["value"] < 100
    assert row["recorded_at"] == EPOCH + dt.timedelta(seconds=i)


# --- the shared table, as seeded by conftest --------------------------------------------------------


def test_seeded_rows_follow_the_spec(table_rows):
    assert [row["id"] for row in table_rows] == list(range(1, ROWS + 1))
    for row in table_rows:
        _assert_row_follows_the_spec(row)


def test_seeded_values_are_spread_not_constant(table_rows):
    values = [row["value"] for row in table_rows]
    assert len(set(values)) > ROWS * 0.99
    assert min(values) < 5 and max(values) > 95


async def test_points_table_has_the_specified_columns(database_url):
    conn = await asyncpg.connect(database_url)
    try:
        columns = await conn.fetch(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_name = 'points' AND table_schema = current_schema() ORDER BY ordinal_position"
        )
        primary_key = await conn.fetchval(
            "SELECT string_agg(a.attname, ',') FROM pg_index i "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = 'points'::regclass AND i.indisprimary"
        )
    finally:
        await conn.close()
    assert [(c["column_name"], c["data_type"]) for c in columns] == [
        ("id", "bigint"),
        ("x", "double precision"),
        ("y", "double precision"),
        ("label", "text"),
        ("value", "double precision"),
        ("recorded_at", "timestamp with time zone"),
    ]
    assert {c["is_nullable"] for c in columns} == {"NO"}
    assert primary_key == "id"


# --- idempotency, in a scratch database -------------------------------------------------------------


async def test_seed_creates_the_missing_table(scratch):
    assert await row_count(scratch) == 0
    await seed(scratch, 50)
    assert [row["id"] for row in await _rows(scratch)] == list(range(1, 51))


async def test_reseeding_restores_exactly_rows_one_to_n(scratch):
    await seed(scratch, 250, batch=100)
    original = await _rows(scratch)
    await scratch.execute("DELETE FROM points WHERE id BETWEEN 10 AND 20")
    await scratch.execute("UPDATE points SET label = 'changed', value = -1 WHERE id IN (1, 2)")
    await scratch.execute(
        "INSERT INTO points VALUES (5000, 1, 2, 'junk', 3, now()), (-7, 1, 2, 'junk', 3, now()), "
        "(251, 1, 2, 'junk', 3, now())"
    )
    await seed(scratch, 250, batch=100)
    assert await _rows(scratch) == original


async def test_seed_with_fewer_rows_shrinks_the_table(scratch):
    await seed(scratch, 250)
    before = await _rows(scratch)
    await seed(scratch, 120)
    assert await _rows(scratch) == before[:120]


async def test_seed_with_zero_rows_empties_the_table(scratch):
    await seed(scratch, 30)
    await seed(scratch, 0)
    assert await row_count(scratch) == 0


async def test_row_values_do_not_depend_on_the_row_count(scratch, table_rows):
    # The session table holds ROWS rows; a smaller, separate seed must give the same first rows.
    await seed(scratch, 333, batch=100)
    assert await _rows(scratch) == table_rows[:333]


async def test_seed_reports_progress_up_to_the_row_count(scratch):
    progress: list[int] = []
    await seed(scratch, 250, progress=progress.append, batch=100)
    assert progress == sorted(progress)
    assert progress[-1] == 250


# --- the other demo tables: orders (wide, typed) and blobs (2 MB a row) -----------------------------


async def _columns(conn: asyncpg.Connection, table: str) -> list[tuple[str, str, bool]]:
    records = await conn.fetch(
        "SELECT attname, format_type(atttypid, atttypmod) AS type, NOT attnotnull AS nullable FROM pg_attribute "
        "WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        table,
    )
    return [(r["attname"], r["type"], r["nullable"]) for r in records]


async def _table(conn: asyncpg.Connection, table: str) -> list[dict]:
    return [dict(record) for record in await conn.fetch(f"SELECT * FROM {table} ORDER BY id")]


async def test_orders_has_a_dozen_columns_of_mixed_types_keyed_by_id(scratch):
    await ORDERS.load(scratch, 10, None)
    assert await _columns(scratch, "orders") == [
        ("id", "bigint", False),
        ("order_uuid", "uuid", False),
        ("customer", "text", False),
        ("amount", "numeric(12,2)", False),
        ("quantity", "integer", False),
        ("discount", "real", True),
        ("weight", "double precision", False),
        ("paid", "boolean", False),
        ("ordered_at", "timestamp with time zone", False),
        ("ship_date", "date", True),
        ("tags", "text[]", False),
        ("attributes", "jsonb", False),
        ("note", "text", False),
    ]
    primary_key = await scratch.fetchval(
        "SELECT string_agg(a.attname, ',') FROM pg_index i "
        "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = 'orders'::regclass AND i.indisprimary"
    )
    assert primary_key == "id"


async def test_orders_rows_carry_nulls_escapes_arrays_and_json(scratch):
    await ORDERS.load(scratch, 250, None)
    rows = await _table(scratch, "orders")
    assert [row["id"] for row in rows] == list(range(1, 251))
    assert {row["discount"] is None for row in rows} == {True, False}
    assert {row["ship_date"] is None for row in rows} == {True, False}
    assert any(None in row["tags"] for row in rows)
    assert all(isinstance(json.loads(row["attributes"]), dict) for row in rows)
    assert len({row["order_uuid"] for row in rows}) == 250
    tricky = [row["note"] for row in rows if row["id"] % 101 == 0]
    assert len(tricky) == 2
    for note in tricky:
        assert all(ch in note for ch in ESCAPED_CHARACTERS) and any(ord(ch) > 127 for ch in note), note
    assert all(row["note"] == f"order {row['id']}" for row in rows if row["id"] % 101)


async def test_blobs_rows_hold_two_megabytes_each(scratch):
    await BLOBS.load(scratch, 3, None)
    sizes = await scratch.fetch("SELECT id, octet_length(payload) AS size FROM blobs ORDER BY id")
    assert [(r["id"], r["size"]) for r in sizes] == [(1, BLOB_BYTES), (2, BLOB_BYTES), (3, BLOB_BYTES)]
    assert await scratch.fetchval("SELECT count(DISTINCT payload) FROM blobs") == 3


@pytest.mark.parametrize("name", ["orders", "blobs"])
async def test_a_generated_row_does_not_depend_on_the_row_count(scratch, name):
    demo = DEMO_TABLES[name]
    await demo.load(scratch, 40, None)
    fewer = await _table(scratch, name)
    await demo.load(scratch, 20, None)
    assert await _table(scratch, name) == fewer[:20]


@pytest.mark.parametrize("name", ["orders", "blobs"])
async def test_reseeding_a_generated_table_restores_exactly_rows_one_to_n(scratch, name):
    demo = DEMO_TABLES[name]
    await demo.load(scratch, 30, None)
    original = await _table(scratch, name)
    await scratch.execute(f"DELETE FROM {name} WHERE id BETWEEN 3 AND 5")
    await scratch.execute(f"UPDATE {name} SET id = 1000 WHERE id = 30")
    await demo.load(scratch, 30, None)
    assert await _table(scratch, name) == original


async def test_ensure_rows_seeds_only_when_the_count_differs(scratch_url, scratch):
    progress: list[tuple[int, int]] = []
    first = await ensure_rows(scratch_url, ORDERS, 120_000, "different", lambda done, of: progress.append((done, of)))
    again = await ensure_rows(scratch_url, ORDERS, 120_000, "different")
    assert (first.rows, first.seeded, again.rows, again.seeded) == (120_000, True, 120_000, False)
    # One step per INSERT ... SELECT batch, up to the count.
    assert progress == [(50_000, 120_000), (100_000, 120_000), (120_000, 120_000)]
    assert await row_count(scratch, "orders") == 120_000


@pytest.mark.parametrize(
    ("name", "theirs"),
    [
        ("points", "id bigint PRIMARY KEY, name text"),
        ("orders", "id bigint PRIMARY KEY, customer text, amount numeric"),
        ("blobs", "id bigint PRIMARY KEY, payload bytea"),
    ],
)
async def test_a_table_of_a_demo_tables_name_with_another_shape_is_never_overwritten(
    scratch_url, scratch, name, theirs
):
    await scratch.execute(f"CREATE TABLE {name} ({theirs})")
    await scratch.execute(f"INSERT INTO {name} (id) VALUES (7), (8)")
    for when in ("empty", "different", "always"):
        with pytest.raises(NotTheDemoTable, match=f"the {name} table in this database is not the demo table"):
            await ensure_rows(scratch_url, DEMO_TABLES[name], 5, when)
    assert [r["id"] for r in await scratch.fetch(f"SELECT id FROM {name} ORDER BY id")] == [7, 8]
