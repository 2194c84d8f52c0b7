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
from ..db.statements import MAX_ID, copy_page_sql, open_range_statement, page_range_statement
from .formats import FORMATS, Format
from .request import Export


class DatabaseClock(Protocol):
    """Where an export adds up the time its queries took (the web layer's RequestTiming is one)."""

    db_seconds: float


# How long a stopped export waits for its pages in flight before cancelling them.
PAGE_SETTLE_SECONDS = 1.0


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
    """The statements an export runs, compiled once per application."""

    def __init__(self) -> None:
        self.page_range = page_range_statement()
        self.open_range = open_range_statement()
        self._copy = {name: copy_page_sql(f.columns) for name, f in FORMATS.items()}

    def copy_sql(self, fmt: Format) -> str:
        return self._copy[fmt.name]


async def _fetch_page(
    lanes: Lanes,
    queries: PageQueries,
    export: Export,
    after_id: int,
    size: int | None,
    bounds: asyncio.Future[tuple[int, int]],
    timing: DatabaseClock,
    priority: int,
) -> Page:
    """One page on one connection: find its id range (published through `bounds` at once, so the next
    page can start), then COPY its rows. size None means every row after after_id, in one COPY."""
    started = time.perf_counter()
    try:
        async with lanes.connection(priority) as conn:
            if size is None:
                await conn.fetchval(queries.open_range.sql, *queries.open_range.args(after_id=after_id))
                rows, last_id = None, MAX_ID
            else:
                record = await conn.fetchrow(
                    queries.page_range.sql, *queries.page_range.args(after_id=after_id, page_size=size)
                )
                rows, last_id = record["rows"], record["last_id"] or after_id
            if not bounds.done():  # a cancelled consumer may have given up on it already
                bounds.set_result((rows, last_id))
            if rows == 0:
                return Page(0, b"")
            received: list[bytes] = []

            async def keep(data: bytes) -> None:
                received.append(data)

            fmt = export.format
            status = await conn.copy_from_query(queries.copy_sql(fmt), output=keep, **fmt.copy_options)
    except BaseException as exc:
        if not bounds.done():
            bounds.set_exception(exc)
            bounds.exception()  # the page's own task reports it; don't warn about it twice
        raise
    finally:
        timing.db_seconds += time.perf_counter() - started
    copied = int(status.rsplit(" ", 1)[-1])  # "COPY <rows>"
    return Page(copied, b"".join(received))


async def pages(
    lanes: Lanes, queries: PageQueries, export: Export, timing: DatabaseClock, depth: int = 2
) -> AsyncIterator[Page]:
    """Keyset pages in id order, up to `depth` of them in flight on their own connections.

    Page k+1 starts as soon as page k's id range is known (one index-only query), so PostgreSQL renders
    the next pages on other backends while this one is written to the client. A connection is held only
    while its page's queries run, never while waiting on the client.
    """
    loop = asyncio.get_running_loop()
    in_flight: deque[asyncio.Task[Page]] = deque()
    # Where the next page begins; rows of the limit not yet given to a page (None: no limit).
    next_after, budget = export.after_id, export.limit
    more = budget != 0
    started = 0
    # The id range of the page started last decides where (and whether) the next one starts.
    last_started: tuple[asyncio.Future[tuple[int, int]], int | None] | None = None

    def size_for(budget: int | None) -> int | None:
        page_size = export.page_size
        if page_size is not None and started == 0 and export.first_page_size:
            page_size = min(page_size, export.first_page_size)  # a small first page: first bytes sooner
        if page_size is None:
            return budget  # one page for everything asked (None: every row)
        return page_size if budget is None else min(page_size, budget)

    async def fill(up_to: int, wait: bool = True) -> None:
        """Start pages until `up_to` are in flight; each starts once the range of the one before is known
        (a quick index-only query). Without `wait`, only as far as that is known already."""
        nonlocal next_after, budget, more, started, last_started
        while more and len(in_flight) < up_to:
            if last_started is not None:
                bounds, size = last_started
                if not wait and not bounds.done():
                    return
                rows, last_id = await bounds
                if size is None or rows < size:
                    more = False  # the last page started is short: nothing follows it
                    return
                next_after = last_id
            size = size_for(budget)
            bounds = loop.create_future()
            priority = Lanes.FIRST if started == 0 else Lanes.LATER
            started += 1
            task = asyncio.ensure_future(
                _fetch_page(lanes, queries, export, next_after, size, bounds, timing, priority)
            )
            in_flight.append(task)
            last_started = (bounds, size)
            if budget is not None and size is not None:
                budget -= size
            more = size is not None and budget != 0

    try:
        # The first page alone, and handed on without waiting for the next one's range: nothing
        # competes with, or delays, the rows a client waits for first.
        await fill(1)
        wait = False
        while in_flight:
            page = await in_flight.popleft()
            await fill(depth, wait)
            wait = True
            if page.rows:
                yield page
    finally:
        await _settle(in_flight)


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
    fmt = export.format
    first = True
    # aclosing: when the consumer stops early, pages() cleans up now, not later in a task of its own.
    async with contextlib.aclosing(pages(lanes, queries, export, timing)) as page_source:
        async for page in page_source:
            body = fmt.page_bytes(page.body, first)
            yield Chunk(page.rows, (fmt.head, body) if first else (body,))
            first = False
    # Always at least one chunk (the head, for an export with no rows), so the first page is a chunk.
    if first or fmt.tail:
        yield Chunk(0, (fmt.head, fmt.tail) if first else (fmt.tail,))
