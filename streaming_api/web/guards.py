"""Guards that keep one /standard request from hurting the others: its slots and its row cap."""

from __future__ import annotations

from ..db.lanes import Lanes, Units
from ..db.statements import count_up_to_sql, fetch_uncached
from ..export.request import Export


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


async def exact_rows(lanes: Units, export: Export, cap: int) -> int:
    """The export's rows (those its filters keep), counted no further than cap + 1 (a walk of the key's
    index that stops early)."""
    up_to = cap + 1 if export.limit is None else min(export.limit, cap + 1)
    sql = count_up_to_sql(export.table, export.after, up_to, export.where_sql)
    async with lanes.connection(Lanes.FIRST) as conn:
        return (await fetch_uncached(conn, sql))[0][0]


async def rows_exceed(lanes: Units, export: Export, cap: int) -> bool:
    """Whether the export would return more than cap rows."""
    if export.limit is not None and export.limit <= cap:
        return False
    return await exact_rows(lanes, export, cap) > cap
