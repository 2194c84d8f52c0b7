"""How many rows an export will carry, told before its first byte: exact when that is cheap, else estimated.

Exact when the rows after after_id can be counted in a short walk of the primary key (the export ends
within EXACT_UP_TO rows, or its limit is reached within them); otherwise an estimate from the table's
statistics (pg_class.reltuples) scaled by how much of the id range lies after after_id, capped by the limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..db.lanes import Lanes
from ..db.statements import MAX_ID, Statement
from .request import Export

# Counting this many index entries takes a tenth of a millisecond: ready beside the first page.
EXACT_UP_TO = 5_000


@dataclass(frozen=True)
class RowCount:
    rows: int
    exact: bool


async def expected_rows(lanes: Lanes, statement: Statement, export: Export) -> RowCount:
    if export.limit == 0:
        return RowCount(0, True)
    up_to = min(export.limit if export.limit is not None else MAX_ID, EXACT_UP_TO)
    async with lanes.connection(Lanes.FIRST) as conn:
        record = await conn.fetchrow(statement.sql, *statement.args(after_id=export.after_id, up_to=up_to))
    counted, total, min_id, max_id = record["counted"], record["estimated_total"], record["min_id"], record["max_id"]
    if counted < up_to or counted == export.limit:
        return RowCount(counted, True)
    # More rows than were counted: estimate the rest from the table's statistics and its id range.
    if total is None or total < 0 or min_id is None or max_id is None or max_id < min_id:
        estimate = counted  # never analysed: at least this many
    else:
        after = max(export.after_id, min_id - 1)
        estimate = max(counted, round(total * (max_id - after) / (max_id - min_id + 1)))
    if export.limit is not None:
        estimate = min(estimate, export.limit)
    return RowCount(estimate, False)
