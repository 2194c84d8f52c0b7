"""The pages PostgreSQL renders for an export, and the bytes both endpoints send.

Both endpoints run the same `encoded_chunks()`; they part ways only in what they do with each chunk
(web.handlers: /standard collects them into one body, /chunked writes each one as it comes).

A page is one statement: a COPY of the rows between two key values. Its output passes on as it arrives
(PageFeed), so memory stays flat whatever a row weighs: a page in flight behind the one being sent keeps
at most `page_bytes` of its output, then waits (and PostgreSQL with it). A whole-page format (Arrow)
needs all of a page before its batch exists; its pages are sized in bytes so that stays small.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ..db.lanes import Lanes, Units
from ..db.statements import copy_statement, sql_text
from .count import RowCount
from .layout import Layout
from .planner import DatabaseClock, Planner
from .request import Export

# How long a stopped export waits for its pages in flight before cancelling them.
PAGE_SETTLE_SECONDS = 1.0
# A page buffers at most this much of its output while waiting its turn, without a page_bytes setting.
DEFAULT_PAGE_BYTES = 8 << 20
# A page's output passes on before the page ends once this much of it is waiting (a page of wide rows).
PIECE_BYTES = 1 << 20
# Rows fetched at a time from a cursor (a whole-page format over a relation without a key).
CURSOR_PAGE_ROWS = 1000


@dataclass(frozen=True)
class Piece:
    """Output on its way: bytes as PostgreSQL wrote them, and the rows of the page this piece ends (0 when
    it does not end one; a whole-page format's pieces are whole pages)."""

    data: bytes | memoryview
    rows: int
    ends_page: bool
    # Already as it goes on the wire (a page a cursor fetched, made into a batch as it came).
    ready: bool = False


@dataclass(frozen=True)
class Chunk:
    rows: int
    parts: tuple[bytes | memoryview, ...]


class PageFeed:
    """One page's COPY output as it arrives: pieces kept until taken, at most `capacity` bytes of them
    while the page waits its turn (then asyncpg stops reading, and PostgreSQL stops writing)."""

    def __init__(self, capacity: int, signal: asyncio.Event) -> None:
        self._pieces: deque[bytes] = deque()
        self._buffered = 0
        self._capacity = capacity
        self._signal = signal
        self._room = asyncio.Event()
        self.copied_rows: int | None = None
        self.total_bytes = 0
        self.abandoned = False

    @property
    def done(self) -> bool:
        return self.copied_rows is not None

    @property
    def buffered(self) -> int:
        return self._buffered

    async def put(self, data: bytes) -> None:
        """asyncpg's output callback for the page's COPY."""
        if self.abandoned:
            return
        self._pieces.append(data)
        self._buffered += len(data)
        self.total_bytes += len(data)
        self._signal.set()
        while self._buffered > self._capacity and not self.abandoned:
            self._room.clear()
            await self._room.wait()

    def end(self, copied_rows: int) -> None:
        self.copied_rows = copied_rows
        self._signal.set()

    def take(self) -> bytes:
        """Every piece that has arrived, joined (b"" if none)."""
        if not self._pieces:
            return b""
        data = self._pieces[0] if len(self._pieces) == 1 else b"".join(self._pieces)
        self._pieces.clear()
        self._buffered = 0
        self._room.set()
        return data

    def abandon(self) -> None:
        """The export stopped: what is still to come is thrown away, and nothing waits for room."""
        self.abandoned = True
        self._pieces.clear()
        self._room.set()


async def _fetch_page(
    lanes: Units, sql: str, layout: Layout, feed: PageFeed, clock: DatabaseClock, priority: int, whole: bool
) -> None:
    """One page: one COPY of its rows on one connection, its output handed to the feed as it arrives.
    `whole`: the export is one page of a relation without a key, however long (a statement of its own
    time limit, request_deadline's, inside a transaction)."""
    started = time.perf_counter()
    try:
        status = await lanes.copy(priority, copy_statement(sql, layout.copy_options), feed.put, long=whole)
    finally:
        clock.db_seconds += time.perf_counter() - started
    feed.end(int(status.rsplit(" ", 1)[-1]))  # status: "COPY <rows>"


async def pages(
    lanes: Units,
    export: Export,
    clock: DatabaseClock,
    depth: int = 2,
    smallest_key: int | None = None,
    expected: asyncio.Future[RowCount] | None = None,
) -> AsyncIterator[Piece]:
    """The export's output in key order, as it arrives; up to `depth` pages in flight on their own
    connections. PostgreSQL renders the next pages on other backends while this one is written to the
    client. A connection is held only while its page's statement runs (and, for a page bigger than
    page_bytes, while the client takes it). `expected`: the export's row estimate being made (the planner
    sizes a filtered export's plans by it)."""
    layout = export.layout
    if layout.whole_pages and not export.table.key and export.page_size is not None:
        async for piece in _cursor_pages(lanes, export, clock):
            yield piece
        return
    signal = asyncio.Event()
    planner = Planner(lanes, export, clock, smallest_key, signal, expected)
    capacity = export.page_bytes or DEFAULT_PAGE_BYTES
    # Never more than a waiting page may hold: the page being sent must not wait for room it cannot get.
    passing = min(PIECE_BYTES, capacity)
    in_flight: deque[tuple[PageFeed, asyncio.Task[None]]] = deque()
    started = False  # whether the first page has been started
    whole = not export.table.key and export.page_size is not None

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
            feed = PageFeed(capacity, signal)
            sql = layout.page_sql(export.table, spec, export.where_sql)
            task = asyncio.ensure_future(_fetch_page(lanes, sql, layout, feed, clock, priority, whole))
            task.add_done_callback(lambda _: signal.set())
            in_flight.append((feed, task))

    try:
        await top_up(1, may_wait=True)
        first = True
        while in_flight:
            feed, task = in_flight[0]
            collected: list[bytes] = []
            while True:
                signal.clear()
                _raise_failures(in_flight, planner)
                ended = feed.done and task.done()
                # A page passes on whole (its rows known with it), unless it is big: then as it arrives.
                data = feed.take() if ended or feed.buffered >= passing else b""
                if ended:
                    break
                if data:
                    if layout.whole_pages:
                        collected.append(data)
                    else:
                        yield Piece(data, 0, False)
                    continue
                await signal.wait()
            in_flight.popleft()
            task.result()
            body = data
            if layout.whole_pages:
                # A page that came in one piece is passed on as it is: a copy of megabytes saved.
                parts = [part for part in (*collected, data) if part]
                body = parts[0] if len(parts) == 1 else b"".join(parts)
            collected.clear()  # the pieces are in `body` now: not held twice while the page is made
            assert feed.copied_rows is not None
            rows = layout.rows(body, feed.copied_rows) if layout.whole_pages else feed.copied_rows
            planner.weighed(rows, feed.total_bytes)
            if first:
                planner.first_page_done(rows)
                first = False
            # Start what can start now and plan ahead, but hand this page on before waiting for a plan.
            await top_up(depth, may_wait=False)
            if body or rows:
                yield Piece(body, rows, True)
            if not in_flight:
                await top_up(depth, may_wait=True)
    finally:
        await planner.close()
        await _settle(in_flight)


def _raise_failures(in_flight: deque[tuple[PageFeed, asyncio.Task[None]]], planner: Planner) -> None:
    """A page in flight or the plan being fetched that failed: its failure at once (the page being sent
    may be stuck, on a lock say, and would hold the export)."""
    for _, task in in_flight:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    planning = planner.planning
    if planning is not None and planning.done() and not planning.cancelled() and planning.exception() is not None:
        raise planning.exception()  # type: ignore[misc]


async def _settle(in_flight: deque[tuple[PageFeed, asyncio.Task[None]]]) -> None:
    """After an early stop (client gone, failure): let pages in flight end by themselves, their output
    thrown away (a page takes milliseconds, and cancelling a COPY midway costs its connection); cancel
    what is still running after PAGE_SETTLE_SECONDS or if we are cancelled ourselves."""
    if not in_flight:
        return
    tasks = [task for _, task in in_flight]
    for feed, _ in in_flight:
        feed.abandon()
    try:
        await asyncio.wait(tasks, timeout=PAGE_SETTLE_SECONDS)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _cursor_pages(lanes: Units, export: Export, clock: DatabaseClock) -> AsyncIterator[Piece]:
    """A whole-page format over a relation without a key: one cursor in one transaction (one snapshot),
    CURSOR_PAGE_ROWS rows a page (fewer where rows are wide). The connection is held for the export."""
    layout = export.layout
    assert layout.cursor_query is not None and layout.cursor_page is not None
    query = layout.cursor_query(export.where_sql)
    if export.limit is not None:
        query = query.limit(export.limit)
    rows_per_fetch = CURSOR_PAGE_ROWS
    if export.page_bytes and export.table.row_bytes:
        rows_per_fetch = max(1, min(rows_per_fetch, int(export.page_bytes // export.table.row_bytes)))
    async with lanes.transaction(Lanes.FIRST, long=False) as conn:
        await conn.execute(f"DECLARE streaming_api_export NO SCROLL CURSOR FOR {sql_text(query)}")
        while True:
            started = time.perf_counter()
            try:
                records = await conn.fetch(f"FETCH FORWARD {rows_per_fetch} FROM streaming_api_export")
            finally:
                clock.db_seconds += time.perf_counter() - started
            if not records:
                return
            rows, data = layout.cursor_page(records)
            yield Piece(data, rows, True, ready=True)


async def encoded_chunks(
    lanes: Units,
    export: Export,
    timing: DatabaseClock,
    smallest_key: int | None = None,
    expected: asyncio.Future[RowCount] | None = None,
) -> AsyncIterator[Chunk]:
    """The response body, as chunks of parts (joined by the sink, once): (head, the first output),
    (more output), ..., (tail). The head rides on the first output, so the first chunk already carries
    rows; the tail follows as a small chunk of its own. Text arrives in pieces that end at a line's end
    (JSON's separators are written between whole lines); a whole-page format, a page at a time.
    """
    layout = export.layout
    first = True
    carried = b""
    # Rows of pages whose last bytes went out before the page's end was known.
    rows = 0
    # aclosing: when the consumer stops early, pages() cleans up now, not later in a task of its own.
    source = pages(lanes, export, timing, smallest_key=smallest_key, expected=expected)
    async with contextlib.aclosing(source) as source:
        async for piece in source:
            rows += piece.rows
            if piece.ready:
                body = piece.data
            elif layout.whole_pages:
                body = layout.page_bytes(piece.data, first)
            else:
                data = carried + piece.data if carried else piece.data
                end = data.rfind(b"\n") + 1
                data, carried = data[:end], data[end:]
                if not data:
                    continue
                body = layout.piece_bytes(data, first)
            yield Chunk(rows, (layout.head, body) if first else (body,))
            rows = 0
            first = False
    if carried:
        raise ValueError("PostgreSQL's output ended inside a line")
    # Always at least one chunk (the head, for an export with no rows), so the first page is a chunk.
    if first or layout.tail or rows:
        yield Chunk(rows, (layout.head, layout.tail) if first else (layout.tail,))
