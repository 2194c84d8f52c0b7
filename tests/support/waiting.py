"""Bounded waits: poll a condition until it holds, or fail naming what did not happen."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import asyncpg

if TYPE_CHECKING:
    from .running import Running


async def wait_until(condition: Callable[[], bool], within: float, what: str) -> None:
    """Poll condition until it holds; fail naming `what` if it does not within `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:g} s: {what}")
        await asyncio.sleep(0.01)


def busy_connections(pool: asyncpg.Pool) -> int:
    """Pool connections currently handed out (0 when every open connection is back in the pool)."""
    return pool.get_size() - pool.get_idle_size()


async def connections_back(server: Running, within: float = 1.0) -> None:
    """Every connection is back in the pool within a second (a cancelled query's release finishes a moment
    after its task, under asyncpg's shield)."""
    await wait_until(lambda: busy_connections(server.pool) == 0, within, "every connection is back in the pool")
