"""Where an export's pages begin and end (the Planner), so that pages can start without waiting for each other."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from typing import Protocol

from ..db.lanes import Lanes, Units
from ..db.statements import INTEGER_MAX, KeyValue, PageSpec, fetch_uncached, plan_sql
from .count import RowCount, estimate
from .ranges import IdRanges
from .request import Export

# Pages per plan (one statement, one walk of their stretch of the index), and rows: big pages (Arrow's
# 10,000) are planned a few at a time, so the plan that runs beside an export's first page stays short.
PLAN_PAGES = 32
PLAN_ROWS = 32_000
# The next window is planned when no more than this many planned pages are left to start.
REPLAN_AHEAD_PAGES = 4
# A filtered export's plan walks every row its pages span, not only those it keeps (a filter that keeps 10%
# walks ten times the rows): its windows are sized by the share of rows the planner estimates the filter
# keeps, so a plan walks about as many rows as an unfiltered one; this many pages when nothing estimates it.
FILTERED_PLAN_PAGES = 4
# How long the first plan waits for the export's row estimate (normally long since there).
ESTIMATE_WAIT_SECONDS = 0.05
# A filter estimated to keep at least this share of the rows is left out of the plans (without a limit):
# they then walk the key's index alone, as unfiltered, and each page still holds most of page_size rows.
UNFILTERED_PLANS_FROM_SHARE = 0.9


class DatabaseClock(Protocol):
    """Where an export adds up the time its queries took (the web layer's RequestTiming is one)."""

    db_seconds: float


class Planner:
    """Where an export's pages begin and end.

    A key of one integer column: the first page is the next ids (after `after`, or from the table's
    smallest id as last reflected), so it starts at once, and where it ends is known before it runs. Any
    other key: the first page's end is planned first (one short walk of the key's index). The pages after
    it are planned a window at a time (one statement each), so pages need not wait for each other to
    start: the next window is planned while the pages of this one run. Without a page size (/standard)
    or a key (a view), one page holds every row. Pages hold at most page_size rows, fewer where rows are
    wide: about page_bytes of them, from what rows weigh (sampled when the table was reflected, then as
    pages arrive); for wide tables the plan itself adds up the rows' bytes."""

    def __init__(
        self,
        lanes: Units,
        export: Export,
        clock: DatabaseClock,
        smallest_key: int | None,
        signal: asyncio.Event,
        expected: asyncio.Future[RowCount] | None = None,
    ) -> None:
        self._lanes = lanes
        # The export's row estimate as the headers get it (a filtered export's: the planner's), when one is made.
        self._expected = expected
        # Set when a plan ends, so an export waiting on its pages sees a plan's failure at once.
        self._signal = signal
        self._export = export
        self._clock = clock
        self._after: KeyValue | None = export.after
        # Rows of the limit not planned yet (None: no limit).
        self._budget = export.limit
        self.row_bytes = export.table.row_bytes or 0.0
        self.ready: deque[PageSpec] = deque()
        self.done = export.limit == 0
        # Pages per plan, and whether the plans carry the filter: a filtered export's are settled by the first
        # plan after its first page (_settle_window).
        self.window = PLAN_PAGES
        self._plan_where = None if export.where is None else export.where.plan_sql
        self._settled = export.where is None
        # A filtered export's later pages as id ranges by arithmetic, without plans (export.ranges).
        self._ranges: IdRanges | None = None
        self._planning: asyncio.Task[None] | None = None
        # A limit's budget for the later pages waits for the first page's row count (see first_page_done).
        self._first_pending = False
        self._rows_before_plan = 0
        self._first_rows = 0
        if self.done:
            return
        if export.page_size is None or not export.table.key:
            self.ready.append(PageSpec(export.after, None, export.limit))
            self.done = True
            return
        self._first_rows = self._rows_per_page(min(export.page_size, export.first_page_size or export.page_size))
        # The first id range starts after `after`, or just before the smallest id (and takes any smaller
        # id written since that was read: it has no lower bound), or where the filters on the key start.
        base = export.after_integer if export.after is not None else None if smallest_key is None else smallest_key - 1
        floor = None if export.where is None else export.where.key_floor()
        if floor is not None and (base is None or floor > base):
            base = floor
        if export.table.integer_key and base is not None:
            column = export.table.column(export.table.key[0])
            assert column is not None and column.type.builtin is not None
            top = INTEGER_MAX[column.type.builtin]
            last = min(base + self._first_rows, top)
            self.ready.append(PageSpec(export.after, (str(last),), self._budget))
            self._after = (str(last),)
            self.done = last == top
            self._first_pending = self._budget is not None
            self._first_rows = 0  # the first page is taken: plans use page_size from here

    def _rows_per_page(self, rows: int) -> int:
        """At most `rows`, and fewer where that many would weigh more than page_bytes."""
        budget = self._export.page_bytes
        if budget and self.row_bytes > 0:
            rows = min(rows, max(1, int(budget // self.row_bytes)))
        return rows

    def weighed(self, rows: int, nbytes: int) -> None:
        """A page arrived: rows weigh at least what these did (pages shrink, never grow, within an export)."""
        if rows:
            self.row_bytes = max(self.row_bytes, nbytes / rows)
        if self._ranges is not None:
            self._ranges.arrived(rows)

    def first_page_done(self, rows: int) -> None:
        """The first page's row count: what is left of the limit for the pages after it."""
        self._rows_before_plan = rows
        if self._first_pending:
            assert self._budget is not None
            self._budget -= rows
            self.done = self.done or self._budget == 0
            self._first_pending = False

    def take_ready(self, plan_ahead: bool = True) -> PageSpec | None:
        """The next page if its bounds are known, without waiting; and, with plan_ahead, start planning the
        next window in the background when few planned pages are left."""
        self._collect()
        if self._ranges is not None and not self.ready and not self.done:
            self.ready.append(self._ranges.next())
            self.done = self._ranges.done
        spec = self.ready.popleft() if self.ready else None
        if plan_ahead and len(self.ready) <= REPLAN_AHEAD_PAGES and self._may_plan() and self._planning is None:
            self._start_plan(Lanes.LATER)
        return spec

    def _start_plan(self, priority: int) -> None:
        self._planning = asyncio.ensure_future(self._plan(priority))
        self._planning.add_done_callback(lambda _: self._signal.set())

    async def take(self, plan_ahead: bool = True) -> PageSpec | None:
        """The next page, waiting for its plan if need be; None once every page has been taken."""
        while not self.ready and self._may_plan():
            if self._planning is None:
                # No row sent yet (no first page, or it fell in a gap of the ids): the plan is first in line.
                urgent = self._rows_before_plan == 0
                self._start_plan(Lanes.FIRST if urgent else Lanes.LATER)
            assert self._planning is not None
            try:
                await self._planning
            finally:
                self._planning = None
        return self.take_ready(plan_ahead)

    def _may_plan(self) -> bool:
        return not self.done and not self._first_pending and self._ranges is None

    @property
    def planning(self) -> asyncio.Task[None] | None:
        """The plan being fetched in the background, if any."""
        return self._planning

    def _collect(self) -> None:
        """Take in a plan that finished in the background (raising its error, if it failed)."""
        if self._planning is not None and self._planning.done():
            planning, self._planning = self._planning, None
            planning.result()

    async def _plan(self, priority: int) -> None:
        export = self._export
        assert export.page_size is not None
        if not self._settled and not self._first_rows:
            await self._settle_window()
            if self._ranges is not None:
                return  # no plans: take_ready makes each page's range
        if self._first_rows:
            size, pages = self._first_rows, 1  # the first page of a key that is not an integer
            self._first_rows = 0
        else:
            size = self._rows_per_page(export.page_size)
            pages = min(self.window, max(2, PLAN_ROWS // size))
            if self._budget is not None:
                pages = min(pages, -(-self._budget // size))
        # Wide rows: the plan adds up their bytes, so a page never holds much more than page_bytes.
        weighed = (
            export.page_bytes if export.page_bytes and self.row_bytes * export.page_size > export.page_bytes else None
        )
        sql = plan_sql(export.table, self._after, size, pages, weighed, self._plan_where)
        started = time.perf_counter()
        try:
            async with self._lanes.connection(priority) as conn:
                records = await fetch_uncached(conn, sql)
        finally:
            self._clock.db_seconds += time.perf_counter() - started
        for record in records:
            bound: KeyValue = tuple(record[1:-1])
            rows = record[-1]
            if self._budget is not None and rows >= self._budget:
                break  # the limit ends inside this page: the export's last page runs to its row count
            # Bounded by the key, a page needs no row limit but the export's: rows written inside its range
            # since the plan then come on top, never in place of rows that were there.
            self.ready.append(PageSpec(self._after, bound, None if self._budget is None else rows))
            self._after = bound
            if self._budget is not None:
                self._budget -= rows
        else:
            if len(records) == pages:
                return  # more to plan
        # The table (or the limit) ends in the next page: it has no upper bound.
        self.ready.append(PageSpec(self._after, None, self._budget))
        self.done = True

    async def _settle_window(self) -> None:
        """A filtered export's plans: windows of PLAN_PAGES times the share of rows its filter keeps (the planner's
        estimate, as the headers carry it), and no filter in them when it keeps nearly every row."""
        self._settled = True
        self.window = FILTERED_PLAN_PAGES
        if self._expected is None:
            return
        try:
            counted = await asyncio.wait_for(asyncio.shield(self._expected), ESTIMATE_WAIT_SECONDS)
        except asyncio.CancelledError:
            if not self._expected.cancelled():
                raise  # this plan is cancelled, not the estimate
            return
        except Exception:  # no estimate (a timeout, a failure the export meets on its own): the default window
            return
        if self._export.limit is not None:
            return  # the estimate is capped by the limit: no share to read from it
        expected = estimate(self._export).rows
        share = counted.rows / max(expected, 1)
        self.window = max(1, min(PLAN_PAGES, math.ceil(PLAN_PAGES * share)))
        if share >= UNFILTERED_PLANS_FROM_SHARE and self._budget is None:
            # Unfiltered plans count rows the filter may leave out: never with a limit's budget to keep.
            self._plan_where = None
        elif self._ranges_fit():
            # (The key's range as the catalog last read it, and the rows it then had there.)
            assert self._after is not None and self._export.table.key_range is not None
            end = self._export.table.key_range[1]
            ids = max(end - int(self._after[0]), 1)
            kept_per_id = counted.rows / ids if counted.rows else 0.0
            ids_per_row = 1 / kept_per_id if kept_per_id else float(ids)
            self._ranges = IdRanges(int(self._after[0]), end, self._rows_per_page(self._export.page_size), ids_per_row)

    def _ranges_fit(self) -> bool:
        """Whether a filtered export's pages may be id ranges (export.ranges): a key of one integer column of
        known range, no limit (its budget needs rows counted ahead), a text format (a page passes on as it
        arrives, however many rows it holds) and rows that are not wide (plans bound those in bytes)."""
        export = self._export
        assert export.page_size is not None
        wide = bool(export.page_bytes) and self.row_bytes * export.page_size > (export.page_bytes or 0)
        return (
            export.table.integer_key
            and export.table.key_range is not None
            and self._after is not None
            and self._budget is None
            and not export.layout.whole_pages
            and not wide
        )

    async def close(self) -> None:
        if self._planning is not None:
            self._planning.cancel()
            await asyncio.gather(self._planning, return_exceptions=True)
            self._planning = None
