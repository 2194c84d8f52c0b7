"""Lanes: first pages and /healthz (FIRST) before later pages (LATER), with half the pool kept for FIRST."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from streaming_api.db.lanes import Lanes

CAPACITY = 4


@pytest.fixture
async def lanes(database_url: str) -> AsyncIterator[Lanes]:
    pool = await asyncpg.create_pool(database_url, min_size=0, max_size=CAPACITY)
    try:
        yield Lanes(pool, CAPACITY)
    finally:
        await pool.close()


class Holder:
    """Takes a connection in a lane and keeps it until released; records when it got it."""

    def __init__(self, lanes: Lanes, priority: int, log: list[str], name: str) -> None:
        self.got = asyncio.Event()
        self._release = asyncio.Event()
        self.task = asyncio.ensure_future(self._hold(lanes, priority, log, name))

    async def _hold(self, lanes: Lanes, priority: int, log: list[str], name: str) -> None:
        async with lanes.connection(priority) as conn:
            assert await conn.fetchval("SELECT 1") == 1
            log.append(name)
            self.got.set()
            await self._release.wait()

    async def release(self) -> None:
        self._release.set()
        await self.task


async def _settle() -> None:
    # Let every task that can run now run (a lane handed over is a future set: one loop turn each).
    for _ in range(5):
        await asyncio.sleep(0)


async def test_later_pages_leave_half_the_pool_to_first_pages(lanes):
    log: list[str] = []
    later = [Holder(lanes, Lanes.LATER, log, f"later{i}") for i in range(3)]
    await asyncio.wait_for(asyncio.gather(later[0].got.wait(), later[1].got.wait()), 10)
    await _settle()
    assert not later[2].got.is_set(), "LATER took a connection kept for FIRST"
    first = [Holder(lanes, Lanes.FIRST, log, f"first{i}") for i in range(2)]
    await asyncio.wait_for(asyncio.gather(*(h.got.wait() for h in first)), 10)
    assert lanes.free == 0
    for holder in [*first, *later[:2]]:
        await holder.release()
    await asyncio.wait_for(later[2].got.wait(), 10)
    await later[2].release()
    assert lanes.free == CAPACITY


async def test_a_freed_connection_goes_to_a_waiting_first_before_an_earlier_later(lanes):
    log: list[str] = []
    busy = [Holder(lanes, Lanes.FIRST, log, f"busy{i}") for i in range(CAPACITY)]
    await asyncio.wait_for(asyncio.gather(*(h.got.wait() for h in busy)), 10)
    waiting_later = Holder(lanes, Lanes.LATER, log, "later")
    await _settle()
    waiting_first = Holder(lanes, Lanes.FIRST, log, "first")
    await _settle()
    for holder in busy:
        await holder.release()
    await asyncio.wait_for(asyncio.gather(waiting_first.got.wait(), waiting_later.got.wait()), 10)
    assert log[CAPACITY:] == ["first", "later"]
    await waiting_first.release()
    await waiting_later.release()
    assert lanes.free == CAPACITY


async def test_a_waiter_cancelled_in_the_queue_loses_no_connection(lanes):
    log: list[str] = []
    busy = [Holder(lanes, Lanes.FIRST, log, f"busy{i}") for i in range(CAPACITY)]
    await asyncio.wait_for(asyncio.gather(*(h.got.wait() for h in busy)), 10)
    waiting = [Holder(lanes, priority, log, f"w{priority}") for priority in (Lanes.FIRST, Lanes.LATER)]
    await _settle()
    for holder in waiting:
        holder.task.cancel()
    await asyncio.gather(*(h.task for h in waiting), return_exceptions=True)
    for holder in busy:
        await holder.release()
    assert lanes.free == CAPACITY
    # Every connection can still be taken at once.
    again = [Holder(lanes, Lanes.FIRST, log, f"again{i}") for i in range(CAPACITY)]
    await asyncio.wait_for(asyncio.gather(*(h.got.wait() for h in again)), 10)
    for holder in again:
        await holder.release()
    assert lanes.free == CAPACITY


async def test_a_waiter_cancelled_as_it_is_served_passes_the_connection_on(lanes):
    log: list[str] = []
    busy = [Holder(lanes, Lanes.FIRST, log, f"busy{i}") for i in range(CAPACITY)]
    await asyncio.wait_for(asyncio.gather(*(h.got.wait() for h in busy)), 10)
    unlucky = Holder(lanes, Lanes.FIRST, log, "unlucky")
    next_in_line = Holder(lanes, Lanes.FIRST, log, "next")
    await _settle()
    # Free one connection (hands it to `unlucky`'s future) and cancel `unlucky` before it runs.
    busy[0]._release.set()
    await busy[0].task
    unlucky.task.cancel()
    await asyncio.gather(unlucky.task, return_exceptions=True)
    await asyncio.wait_for(next_in_line.got.wait(), 10)
    assert "unlucky" not in log
    for holder in [next_in_line, *busy[1:]]:
        await holder.release()
    assert lanes.free == CAPACITY
