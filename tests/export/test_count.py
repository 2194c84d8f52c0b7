"""How many rows an export will carry: exact for small limits, else an estimate that never waits for a
query (the catalog's figures), or the planner's after a key that is not an integer."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from streaming_api.db.lanes import Lanes
from streaming_api.export import count
from streaming_api.export.count import EXACT_UP_TO
from tests.support.pg import ROWS
from tests.support.tables import export_of, reflected

CAPACITY = 4


@pytest.fixture
async def lanes(database_url: str) -> AsyncIterator[Lanes]:
    pool = await asyncpg.create_pool(database_url, min_size=0, max_size=CAPACITY)
    try:
        yield Lanes(pool, CAPACITY)
    finally:
        await pool.close()


@pytest.fixture
async def points(lanes: Lanes):
    async with lanes.pool.acquire() as conn:
        await conn.execute("ANALYZE points")
        return await reflected(conn)


@pytest.mark.parametrize(
    ("after_id", "limit", "rows"),
    [(0, 10, 10), (ROWS - 3, 100, 3), (0, EXACT_UP_TO, min(ROWS, EXACT_UP_TO)), (0, 0, 0)],
)
async def test_small_limits_are_counted_exactly(lanes, points, after_id, limit, rows):
    counted = await count.expected(lanes, export_of(points, after_id=after_id, limit=limit))
    assert (counted.rows, counted.exact) == (rows, True)


@pytest.mark.parametrize(("after_id", "limit"), [(None, None), (ROWS // 2, None), (100, EXACT_UP_TO + 1), (ROWS, None)])
async def test_anything_larger_is_an_estimate_from_the_catalog(lanes, points, after_id, limit):
    counted = await count.expected(lanes, export_of(points, after_id=after_id, limit=limit))
    start = after_id or 0
    rows = ROWS - start if limit is None else min(limit, ROWS - start)
    assert not counted.exact
    assert abs(counted.rows - rows) <= rows * 0.02  # the test table's ids have no gaps


async def test_the_estimate_runs_no_query(points):
    # No lanes at all: estimate() answers from what the catalog read.
    assert count.estimate(export_of(points)) == count.RowCount(ROWS, False)
    assert count.estimate(export_of(points, limit=5)) == count.RowCount(5, False)


async def test_after_a_key_that_is_not_an_integer_the_planner_estimates(lanes):
    async with lanes.pool.acquire() as conn:
        await conn.execute(
            "DROP TABLE IF EXISTS counted_codes; CREATE TABLE counted_codes (code text PRIMARY KEY);"
            " INSERT INTO counted_codes SELECT lpad(g::text, 6, '0') FROM generate_series(1, 10000) g;"
            " ANALYZE counted_codes"
        )
        try:
            served = await reflected(conn, "counted_codes")
            counted = await count.expected(lanes, export_of(served, after=("'007500'",)))
        finally:
            await conn.execute("DROP TABLE counted_codes")
    assert not counted.exact
    assert 2000 <= counted.rows <= 3000  # 2,500 rows follow; the planner's histogram knows about as much
