"""Guards that keep one /standard request from hurting the others: its slots and its row cap."""

from __future__ import annotations

from ..db.lanes import Lanes
from ..db.statements import COUNT_UP_TO


class StandardSlots:
    """How many /standard bodies may be built at once. Never waits: a request either gets a slot or not."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0

    def try_acquire(self) -> bool:
        if self.in_use >= self.limit:
            return False
        self.in_use += 1
        return True

    def release(self) -> None:
        self.in_use -= 1


async def rows_exceed(lanes: Lanes, after_id: int, limit: int | None, cap: int) -> bool:
    """Whether an export of `limit` rows (None: all) after after_id would return more than cap rows."""
    if limit is not None and limit <= cap:
        return False
    async with lanes.connection(Lanes.FIRST) as conn:
        counted = await conn.fetchval(COUNT_UP_TO.sql, *COUNT_UP_TO.args(after_id=after_id, up_to=cap + 1))
    return counted > cap
