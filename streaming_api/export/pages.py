"""The pages PostgreSQL renders for an export, and the bytes both endpoints send.

Both endpoints run the same `encoded_chunks()`; they part ways only in what they do with each chunk
(web.handlers: /standard collects them into one body, /chunked writes each one as it comes).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from ..db.lanes import Lanes
from ..db.statements import MAX_ID, Statement, page_statement, plan_statement
from .layout import Layout
from .request import Export


class DatabaseClock(Protocol):
    """Where an export adds up the time its queries took (the web layer's RequestTiming is one)."""

    db_seconds: float


# How long a stopped export waits for its pages in flight before cancelling them.
PAGE_SETTLE_SECONDS = 1.0
# Pages per plan (one statement, one walk of their stretch of the index).
PLAN_PAGES = 32
# The next window is planned when no more than this many planned pages are left to start.
REPLAN_AHEAD_PAGES = 4


@dataclass(frozen=True)
class Page:
    rows: int
    # PostgreSQL's COPY output for the page's rows.
    body: bytes


@dataclass(frozen=True)
class Chunk:
    rows: int
    parts: tuple[bytes, ...]


class PageQueries:
    """The statements an export runs, compiled once per application (a page's, once per layout used)."""

    def __init__(self) -> None:
        self.plan = plan_statement()
        self._pages: dict[int, Statement] = {}

    def page_sql(self, layout: Layout, spec: PageSpec) -> str:
        statement = self._pages.get(id(layout))
        if statement is None:
            # Layouts are cached for good (formats.layout), so their ids are never reused.
            statement = self._pages[id(layout)] = page_statement(layout.query)
        return statement.inline(after_id=spec.after_id, last_id=spec.last_id, rows=spec.rows)


@dataclass(frozen=True)
class PageSpec:
    """One page's bounds: its rows have after_id < id <= last_id, at most `rows` of them."""

    after_id: int
    last_id: int
    rows: int


class Planner:
    """Where an export's pages begin and end. The first page needs no plan: it is the next
    `first_page_size` ids (after_id < id <= after_id + first_page_size), so it starts at once, at most that
    many rows (fewer where ids have gaps), and where it ends is known before it runs. The pages after it are
    planned a window at a time (one statement each, an index-only walk), so pages need not wait for each
    other to start: the next window is planned while the pages of this one run. Without a page size
    (/standard), one page holds every row."""

    def __init__(self, lanes: Lanes, queries: PageQueries, export: Export, clock: DatabaseClock) -> None:
        self._lanes = lanes
        self._queries = queries
        self._export = export
        self._clock = clock
        self._after = export.after_id
        # Rows of the limit not planned yet (None: no limit).
        self._budget = export.limit
        self.ready: deque[PageSpec] = deque()
        self.done = export.limit == 0
        self._planning: asyncio.Task[None] | None = None
        # A limit's budget for the later pages waits for the first page's row count (see first_page_done).
        self._first_pending = False
        self._rows_before_plan = 0
        if self.done:
            return
        if export.page_size is None:
            self.ready.append(PageSpec(export.after_id, MAX_ID, MAX_ID if export.limit is None else export.limit))
            self.done = True
            return
        first = min(export.page_size, export.first_page_size or export.page_size)
        last = min(self._after + first, MAX_ID)
        self.ready.append(PageSpec(self._after, last, MAX_ID if self._budget is None else self._budget))
        self._after = last
        self.done = last == MAX_ID
        self._first_pending = self._budget is not None

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
        spec = self.ready.popleft() if self.ready else None
        if plan_ahead and len(self.ready) <= REPLAN_AHEAD_PAGES and self._may_plan() and self._planning is None:
            self._planning = asyncio.ensure_future(self._plan(Lanes.LATER))
        return spec

    async def take(self, plan_ahead: bool = True) -> PageSpec | None:
        """The next page, waiting for its plan if need be; None once every page has been taken."""
        while not self.ready and self._may_plan():
            if self._planning is None:
                # No row sent yet (the first page fell in a gap of the ids): the plan is first in line.
                urgent = self._rows_before_plan == 0
                self._planning = asyncio.ensure_future(self._plan(Lanes.FIRST if urgent else Lanes.LATER))
            try:
                await self._planning
            finally:
                self._planning = None
        return self.take_ready(plan_ahead)

    def _may_plan(self) -> bool:
        return not self.done and not self._first_pending

    @property
    def planning(self) -> asyncio.Task[None] | None:
        """The plan being fetched in the background, if any."""
        return self._planning

    def _collect(self) -> None:
        """Take in a plan that finished in the background (raising its error, if it failed)."""
        if self._planning is not None and self._planning.done():
            planning, self._planning = self._planning, None
            planning.result()

    def _sizes(self) -> list[int]:
        """The sizes of the pages the next plan covers: page_size each, within the limit."""
        export = self._export
        assert export.page_size is not None
        sizes: list[int] = []
        budget = self._budget
        for _ in range(PLAN_PAGES):
            size = export.page_size if budget is None else min(export.page_size, budget)
            sizes.append(size)
            if budget is not None:
                budget -= size
                if budget == 0:
                    break
        return sizes

    async def _plan(self, priority: int) -> None:
        export = self._export
        assert export.page_size is not None
        sizes = self._sizes()
        last_of_export = self._budget is not None and self._budget == sum(sizes)
        # Every page needs its upper bound but the export's last one: that one runs to its row count.
        bounded = len(sizes) - 1 if last_of_export else len(sizes)
        bounds: list[int | None] = []
        if bounded:
            plan = self._queries.plan
            started = time.perf_counter()
            try:
                async with self._lanes.connection(priority) as conn:
                    records = await conn.fetch(
                        plan.sql, *plan.args(after_id=self._after, size=export.page_size, pages=bounded)
                    )
            finally:
                self._clock.db_seconds += time.perf_counter() - started
            bounds = [record["id"] for record in records]
        for index, rows in enumerate(sizes):
            bound = bounds[index] if index < len(bounds) else None
            if bound is None:
                # The export's last page: the table ends inside it (no bound), or the limit does.
                self.ready.append(PageSpec(self._after, MAX_ID, rows))
                self.done = True
                return
            # Bounded by ids, a page needs no row limit but the export's: rows written inside its range
            # since the plan (explicit ids) then come on top, never in place of rows that were there.
            self.ready.append(PageSpec(self._after, bound, MAX_ID if self._budget is None else rows))
            self._after = bound
        if self._budget is not None:
            self._budget -= sum(sizes)

    async def close(self) -> None:
        if self._planning is not None:
            self._planning.cancel()
            await asyncio.gather(self._planning, return_exceptions=True)
            self._planning = None


async def _fetch_page(
    lanes: Lanes, queries: PageQueries, layout: Layout, spec: PageSpec, clock: DatabaseClock, priority: int
) -> Page:
    """One page: one COPY of its rows on one connection."""
    received: list[bytes] = []

    async def keep(data: bytes) -> None:
        received.append(data)

    started = time.perf_counter()
    try:
        async with lanes.connection(priority) as conn:
            status = await conn.copy_from_query(queries.page_sql(layout, spec), output=keep, **layout.copy_options)
    finally:
        clock.db_seconds += time.perf_counter() - started
    body = b"".join(received)
    return Page(layout.rows(body, int(status.rsplit(" ", 1)[-1])), body)  # status: "COPY <rows>"


async def pages(
    lanes: Lanes, queries: PageQueries, export: Export, clock: DatabaseClock, depth: int = 2
) -> AsyncIterator[Page]:
    """Keyset pages in id order, up to `depth` of them in flight on their own connections.

    PostgreSQL renders the next pages on other backends while this one is written to the client. A
    connection is held only while its page's statement runs, never while waiting on the client.
    """
    planner = Planner(lanes, queries, export, clock)
    layout = export.layout
    in_flight: deque[asyncio.Task[Page]] = deque()

    started = False  # whether the first page has been started

    async def top_up(up_to: int, may_wait: bool) -> None:
        """Start pages until `up_to` are in flight: those whose bounds are known, or, when `may_wait`
        and nothing is in flight, the next one once its plan arrives."""
        nonlocal started
        while len(in_flight) < up_to:
            # Nothing plans ahead before the first page is out: nothing competes with the rows a client
            # waits for first.
            spec = planner.take_ready(plan_ahead=started)
            if spec is None:
                if not may_wait or in_flight:
                    return
                spec = await planner.take(plan_ahead=started)
                if spec is None:
                    return
            priority = Lanes.LATER if started else Lanes.FIRST
            started = True
            in_flight.append(asyncio.ensure_future(_fetch_page(lanes, queries, layout, spec, clock, priority)))

    try:
        await top_up(1, may_wait=True)
        first = True
        while in_flight:
            page = await _next_page(in_flight, planner)
            if first:
                planner.first_page_done(page.rows)
                first = False
            # Start what can start now and plan ahead, but hand this page on before waiting for a plan.
            await top_up(depth, may_wait=False)
            if page.rows:
                yield page
            if not in_flight:
                await top_up(depth, may_wait=True)
    finally:
        await planner.close()
        await _settle(in_flight)


async def _next_page(in_flight: deque[asyncio.Task[Page]], planner: Planner) -> Page:
    """The oldest page in flight, once it is done; but if a later page or the plan being fetched fails
    first, that failure at once (the oldest may be stuck, on a lock say, and would hold the export)."""
    head = in_flight[0]
    while not head.done():
        watched = {task for task in (*in_flight, planner.planning) if task is not None and not task.done()}
        done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not head and not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    in_flight.popleft()
    return head.result()


async def _settle(tasks: deque[asyncio.Task[Page]]) -> None:
    """After an early stop (client gone, failure): let pages in flight end by themselves, a page takes
    milliseconds and cancelling a COPY midway costs its connection; cancel what is still running after
    PAGE_SETTLE_SECONDS or if we are cancelled ourselves. Their results and errors no longer matter."""
    if not tasks:
        return
    try:
        await asyncio.wait(tasks, timeout=PAGE_SETTLE_SECONDS)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def encoded_chunks(
    lanes: Lanes, queries: PageQueries, export: Export, timing: DatabaseClock
) -> AsyncIterator[Chunk]:
    """The response body, one chunk per page, each chunk as its parts (joined by the sink, once):
    (head, page 1), (page 2), ..., (page n), (tail). The head rides on the first page, so the first
    chunk already carries rows; the tail follows as a small chunk of its own.
    """
    layout = export.layout
    first = True
    # aclosing: when the consumer stops early, pages() cleans up now, not later in a task of its own.
    async with contextlib.aclosing(pages(lanes, queries, export, timing)) as page_source:
        async for page in page_source:
            body = layout.page_bytes(page.body, first)
            yield Chunk(page.rows, (layout.head, body) if first else (body,))
            first = False
    # Always at least one chunk (the head, for an export with no rows), so the first page is a chunk.
    if first or layout.tail:
        yield Chunk(0, (layout.head, layout.tail) if first else (layout.tail,))
