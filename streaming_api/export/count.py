"""How many rows an export will carry, told with its headers: exact when that is cheap, else an estimate.

`estimate()` answers at once from what the catalog last read (the table's row estimate, and for a key of
one integer column the share of its range after `after`), so every response can carry a count without
waiting. `expected()` does better where it can in a few milliseconds: an exact count for a small limit
(a short walk of the key's index, EXACT_UP_TO rows at the most), the planner's estimate for rows after a
key of another type. /chunked asks for it beside its first page and sends whichever is ready.

A filtered export's count is always the planner's estimate (EXPLAIN of the filtered rows: it plans, it
reads no row), never a count: counting rows a selective filter keeps can mean reading the whole table.
The catalog knows nothing of the filter, so /chunked waits for that estimate (web.sinks).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..db.lanes import Lanes, Units
from ..db.roles import role_of
from ..db.statements import count_up_to_sql, estimate_sql, fetch_uncached
from .request import Export

EXACT_UP_TO = 5_000


@dataclass(frozen=True)
class RowCount:
    rows: int
    exact: bool


def estimate(export: Export) -> RowCount:
    """At once, from the catalog's figures (refreshed every catalog_refresh seconds); for a filtered export
    only an upper bound (the rows it would carry unfiltered)."""
    if export.limit == 0:
        return RowCount(0, True)
    served = export.table
    total = max(served.estimated_rows or 0, 0)
    after = export.after_integer
    if after is not None and served.key_range is not None:
        low, high = served.key_range
        if after >= high:
            total = 0
        elif after >= low:
            total = round(total * (high - after) / (high - low + 1))
    if export.limit is not None:
        total = min(total, export.limit)
    return RowCount(total, False)


async def planned(lanes: Units, export: Export) -> RowCount:
    """The planner's estimate of the export's rows (after `after`, that its filters keep), within its limit."""
    async with lanes.connection(Lanes.FIRST) as conn:
        plan = await fetch_uncached(conn, estimate_sql(export.table, export.after, export.where_sql))
    rows = round(json.loads(plan[0][0])[0]["Plan"]["Plan Rows"])
    return RowCount(rows if export.limit is None else min(rows, export.limit), False)


async def expected(lanes: Units, export: Export) -> RowCount:
    """Exact for a small limit, the planner's estimate after a key that is not an integer, of a filtered
    export or under a role, else estimate()."""
    if export.limit == 0:
        return RowCount(0, True)
    if export.filters:
        return await planned(lanes, export)
    if export.limit is not None and export.limit <= EXACT_UP_TO:
        async with lanes.connection(Lanes.FIRST) as conn:
            records = await fetch_uncached(conn, count_up_to_sql(export.table, export.after, export.limit))
        return RowCount(records[0][0], True)
    # Under a role, the catalog's figures are the table's, not what its row-level security lets it see.
    if (export.after is not None and export.after_integer is None) or role_of(lanes) is not None:
        return await planned(lanes, export)
    return estimate(export)
