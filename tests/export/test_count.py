"""RowCounter: how many rows an export will carry, exact for small limits, else estimated from table
statistics read at most once every STATS_SECONDS, once for a whole burst of requests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import asyncpg
import pytest

from streaming_api.db.lanes import Lanes
from streaming_api.export import count
from streaming_api.export.count import EXACT_UP_TO, RowCounter
from streaming_api.export.formats import FORMATS
from streaming_api.export.request import Export
from tests.support.pg import ROWS

CAPACITY = 4


class CountedLanes(Lanes):
    """Lanes that count the connections handed out (one per statement the counter runs)."""

    def __init__(self, pool: asyncpg.Pool, capacity: int) -> None:
        super().__init__(pool, capacity)
        self.taken = 0

    @contextlib.asynccontextmanager
    async def connection(self, priority: int) -> AsyncIterator[asyncpg.Connection]:
        self.taken += 1
        async with super().connection(priority) as conn:
            yield conn


@pytest.fixture
async def lanes(database_url: str) -> AsyncIterator[CountedLanes]:
    pool = await asyncpg.create_pool(database_url, min_size=0, max_size=CAPACITY)
    try:
        yield CountedLanes(pool, CAPACITY)
    finally:
        await pool.close()


def _export(after_id: int = 0, limit: int | None = None) -> Export:
    return Export(format=FORMATS["csv"], after_id=after_id, limit=limit, page_size=1000)


@pytest.mark.parametrize(
    ("after_id", "limit", "rows"),
    [(0, 10, 10), (ROWS - 3, 100, 3), (0, EXACT_UP_TO, min(ROWS, EXACT_UP_TO)), (ROWS, None, 0), (0, 0, 0)],
)
async def test_small_limits_and_the_end_of_the_table_are_counted_exactly(lanes, after_id, limit, rows):
    counted = await RowCounter().expected(lanes, _export(after_id, limit))
    assert (counted.rows, counted.exact) == (rows, True)


@pytest.mark.parametrize(("after_id", "limit"), [(0, None), (ROWS // 2, None), (100, EXACT_UP_TO + 1)])
async def test_anything_larger_is_an_estimate_from_the_statistics(lanes, after_id, limit):
    async with lanes.connection(Lanes.FIRST) as conn:
        await conn.execute("ANALYZE points")
    counted = await RowCounter().expected(lanes, _export(after_id, limit))
    rows = ROWS - after_id if limit is None else min(limit, ROWS - after_id)
    assert not counted.exact
    assert abs(counted.rows - rows) <= rows * 0.02  # the test table's ids have no gaps


async def test_a_burst_of_requests_reads_the_statistics_once(lanes):
    counter = RowCounter()
    counts = await asyncio.gather(*(counter.expected(lanes, _export()) for _ in range(16)))
    assert len({c.rows for c in counts}) == 1
    assert lanes.taken == 1
    await counter.expected(lanes, _export(after_id=10))
    assert lanes.taken == 1  # still fresh


async def test_the_statistics_are_read_again_once_stale(lanes, monkeypatch):
    monkeypatch.setattr(count, "STATS_SECONDS", 0.0)
    counter = RowCounter()
    for _ in range(3):
        await counter.expected(lanes, _export())
    assert lanes.taken == 3
