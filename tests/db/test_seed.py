"""Seeding: the points table's shape, row i's values as the issue defines them, and idempotency.

Idempotency tests run in a scratch database created on the session's server, so the shared table stays intact.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

from streaming_api.db.schema import row_count, seed
from tests.support.pg import ROWS

EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
ESCAPED_CHARACTERS = (",", '"', "\\", "\t", "\n")


@pytest.fixture
async def scratch(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection to a new, empty database on the session's server, dropped afterwards."""
    name = f"seed_test_{secrets.token_hex(6)}"
    admin = await asyncpg.connect(database_url)
    try:
        # Identifiers cannot be bound parameters; the name is generated above.
        await admin.execute(f'CREATE DATABASE "{name}"')
        conn = await asyncpg.connect(database_url, database=name)
        try:
            yield conn
        finally:
            await conn.close()
        await admin.execute(f'DROP DATABASE "{name}"')
    finally:
        await admin.close()


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
