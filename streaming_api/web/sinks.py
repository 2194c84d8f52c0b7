"""Where the two endpoints part ways: what is done with each chunk of an export.

Buffered (/standard) keeps every chunk and sends one body with a Content-Length; Streamed (/chunked)
sends the headers with the first chunk and writes each chunk as it comes.
"""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import HttpVersion11, web

from ..db.lanes import Lanes, Units
from ..db.pool import DB_ERRORS
from ..db.roles import role_of
from ..export import count
from ..export.count import RowCount
from ..export.pages import Chunk
from . import encoding, problems
from .guards import rows_exceed
from .keys import SETTINGS, TIMING
from .replies import Reply, content_disposition
from .sending import send_within

# How long the first chunk's headers wait for the row count (expected()); else they carry the estimate.
COUNT_WAIT_SECONDS = 0.001


def content_headers(response: web.StreamResponse, reply: Reply, snapshot: str | None = None) -> None:
    """The headers every data response carries (`snapshot`: the name of the one its rows were read in)."""
    export = reply.export
    response.content_type = export.format.content_type
    response.charset = export.format.charset
    response.headers["Cache-Control"] = "no-store"
    # Say plainly that a range is not served: a client must not fetch parts of an export in parallel.
    response.headers["Accept-Ranges"] = "none"
    # The bytes depend on Accept-Encoding: caches must not hand one client's coding to another.
    response.headers.add("Vary", "Accept-Encoding")
    if reply.coding != encoding.IDENTITY:
        response.headers["Content-Encoding"] = reply.coding
    response.headers["Content-Disposition"] = content_disposition(export.table, export.format)
    if export.table.key:
        # What to resume by: after=[the last row's values of these columns] (JSON, ASCII-safe).
        response.headers["X-Key"] = json.dumps(list(export.table.key))
    if snapshot is not None:
        # The moment every row was read at: a resume presents it (snapshot=) to continue in it.
        response.headers["X-Snapshot"] = snapshot
        if not snapshot.startswith("primary:"):
            response.headers["X-Snapshot-Source"] = "a hot standby: its data may lag the primary's"


async def _snapshot_name(reply: Reply) -> str | None:
    """The export's snapshot as X-Snapshot names it, once its first statement has taken it."""
    return None if reply.export.snapshot is None else await reply.export.snapshot.name()


def count_headers(response: web.StreamResponse, rows: RowCount | None) -> None:
    """How many rows the body carries: X-Row-Count when exact, X-Row-Count-Estimate otherwise (neither
    when not known)."""
    if rows is not None:
        response.headers["X-Row-Count" if rows.exact else "X-Row-Count-Estimate"] = str(rows.rows)


def start_counting(reply: Reply, lanes: Units) -> asyncio.Task[RowCount]:
    task = asyncio.ensure_future(count.expected(lanes, reply.export))
    # Its outcome may be dropped (the headers went without it): never a "never retrieved" warning.
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    return task


class Buffered:
    """/standard's sink: collects every chunk, then sends one body (compressed whole) with a Content-Length.
    More rows than standard_max_rows, or more bytes than standard_max_bytes, is a 413 (nothing is sent
    before the whole body is there, so the refusal is still clean)."""

    def __init__(self, request: web.Request, reply: Reply, lanes: Units) -> None:
        self.request = request
        self.lanes = lanes
        self.reply = reply
        self.export = reply.export
        self.response = web.Response()
        self._chunks: list[Chunk] = []
        self._bytes = 0
        self._rows = 0

    # No row estimate is made beside a /standard export (its count comes with its body).
    counting = None

    async def before_export(self) -> None:
        """Refuse before running it an export over the row cap: counted (up to the cap) only where the
        table's figures say it may be; the cap also holds as the rows come (the COPY asks for one more)."""
        cap = self.request.app[SETTINGS].standard_max_rows
        # Filtered: the catalog knows nothing of the filter, the planner estimates what it keeps.
        figures = await count.planned(self.lanes, self.export) if self.export.filters else count.estimate(self.export)
        if figures.rows > cap and await rows_exceed(self.lanes, self.export, cap):
            raise problems.too_many_rows(self.request, cap)

    async def take(self, chunk: Chunk) -> None:
        settings = self.request.app[SETTINGS]
        self._chunks.append(chunk)
        self._rows += chunk.rows
        self._bytes += sum(len(part) for part in chunk.parts)
        if self._bytes > settings.standard_max_bytes:
            raise problems.too_many_bytes(self.request, settings.standard_max_bytes)
        if self._rows > settings.standard_max_rows:
            raise problems.too_many_rows(self.request, settings.standard_max_rows)

    async def finish(self) -> None:
        timing = self.request[TIMING]
        started = time.perf_counter()
        body = b"".join(part for chunk in self._chunks for part in chunk.parts)
        self._chunks.clear()
        encoder = self.reply.encoder(self.request.app[SETTINGS])
        if encoder is not None:
            # Tens of megabytes: off the event loop (the compressors release the GIL).
            body = await asyncio.to_thread(_compress_whole, encoder, body)
        timing.encode_seconds += time.perf_counter() - started
        self.response.body = body
        content_headers(self.response, self.reply, await _snapshot_name(self.reply))
        count_headers(self.response, RowCount(self._rows, exact=True))
        self.response.headers["Server-Timing"] = (
            f"db;dur={timing.db_ms}, encode;dur={timing.encode_ms}, total;dur={timing.elapsed_ms()}"
        )
        await self.response.prepare(self.request)
        timing.mark_headers(self.response.status)
        await send_within(self.request, self.response.write_eof(), self.request.app[SETTINGS].send_timeout)
        timing.mark_sent(len(body))
        timing.rows = self._rows


def _compress_whole(encoder: encoding.Encoder, body: bytes) -> bytes:
    return encoder.body(body) + encoder.finish()


class Streamed:
    """/chunked's sink: sends the headers with the first chunk, then writes each chunk as it comes
    (compressed and flushed on its own when the client asked for a coding)."""

    def __init__(self, request: web.Request, reply: Reply, lanes: Units, shared: Lanes) -> None:
        self.request = request
        self.lanes = lanes
        # The shared lanes of the source the export reads (the primary's or a replica's).
        self.shared = shared
        self.reply = reply
        self.export = reply.export
        self.response = web.StreamResponse()
        self.encoder = reply.encoder(request.app[SETTINGS])
        # The row count being made beside the first page (once before_export has started it).
        self.counting: asyncio.Task[RowCount] | None = None

    async def before_export(self) -> None:
        # Counted beside the first page, on a connection of its own. Not under a role: the catalog's figures
        # are the whole table's, and a count under row-level security can take as long as the rows (a
        # policy the planner misjudges), holding the snapshot's first statement, so the first byte. A
        # filtered export's count is an EXPLAIN, which reads no snapshot: straight to PostgreSQL it runs on
        # the shared lanes, never first on the snapshot's holder, where the first page runs (behind a
        # pooler, the export's one connection).
        if role_of(self.lanes) is not None:
            return
        lanes = self.shared if self.export.filters and self.shared.unit_begin is None else self.lanes
        self.counting = start_counting(self.reply, lanes)

    async def _expected_rows(self) -> RowCount | None:
        """The count if it is known within COUNT_WAIT_SECONDS of the first chunk, else the estimate: the
        first byte never waits for a count. A filtered export's is the planner's estimate, waited for (an
        EXPLAIN, which reads no row: the catalog's figures know nothing of the filter). None under a role
        (no count was started)."""
        if self.counting is None:
            return None
        try:
            if self.export.filters:
                return await asyncio.shield(self.counting)
            return await asyncio.wait_for(asyncio.shield(self.counting), COUNT_WAIT_SECONDS)
        except (TimeoutError, *DB_ERRORS):
            self.counting.cancel()
            return count.estimate(self.export)

    async def take(self, chunk: Chunk) -> None:
        timing = self.request[TIMING]
        if not self.response.prepared:
            # The first chunk comes before the headers: a database failure up to here is still a clean 503.
            content_headers(self.response, self.reply, await _snapshot_name(self.reply))
            count_headers(self.response, await self._expected_rows())
            # A proxy must pass each chunk on as it comes (nginx honours this even in its stock configuration).
            self.response.headers["X-Accel-Buffering"] = "no"
            self.response.headers["Server-Timing"] = f"db;dur={timing.db_ms}"
            # No length: aiohttp frames the body with chunks for HTTP/1.1 and by closing the connection for
            # HTTP/1.0 clients (curl --http1.0, ab, a stock nginx upstream), which must then not be kept alive.
            if self.request.version < HttpVersion11:
                self.response.force_close()
            await self.response.prepare(self.request)
            timing.mark_headers(self.response.status)
        # One part (a page): as it is, not copied.
        data = chunk.parts[0] if len(chunk.parts) == 1 else b"".join(chunk.parts)
        if self.encoder is not None and data:
            data = self.encoder.page(data)
        await self._send(data)
        timing.rows += chunk.rows

    async def finish(self) -> None:
        if self.encoder is not None:
            await self._send(self.encoder.finish())
        await send_within(self.request, self.response.write_eof(), self.request.app[SETTINGS].send_timeout)

    async def _send(self, data: bytes) -> None:
        if data:
            await send_within(self.request, self.response.write(data), self.request.app[SETTINGS].send_timeout)
            self.request[TIMING].mark_sent(len(data))
