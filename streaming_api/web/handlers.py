"""The routes: /standard buffers the whole body, /chunked streams it page by page, /healthz.

Both export endpoints run the same export with the same error path (`_send_export`); they differ only
in their sink, what is done with each chunk: `Buffered` collects it, `Streamed` writes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import ClientConnectionResetError, HttpVersion11, web

from ..db.lanes import Lanes
from ..db.pool import DB_ERRORS
from ..db.sources import Source, where
from ..export.count import RowCount
from ..export.formats import BY_EXTENSION, NotAcceptable
from ..export.pages import Chunk, encoded_chunks
from ..export.request import BadParameter, Export, FormatUnavailable, parse_export
from ..settings import Settings
from . import encoding, problems
from .guards import rows_exceed
from .keys import COUNTER, LANES, QUERIES, SETTINGS, SOURCES, STANDARD_SLOTS, TIMING
from .middleware.auth import requires_token
from .sending import ClientGone, ClientTooSlow, abort, send_within

log = logging.getLogger(__name__)

# How long the first page's headers wait for the row count (see Streamed._expected_rows).
COUNT_WAIT_SECONDS = 0.001


@dataclass(frozen=True)
class Reply:
    """What a data request asked for: the export, and the content coding its bytes go out in."""

    export: Export
    coding: str

    def encoder(self, settings: Settings) -> encoding.Encoder | None:
        return encoding.encoder(self.coding, {"zstd": settings.zstd_level, "gzip": settings.gzip_level})


def _reply(request: web.Request, endpoint: str) -> Reply:
    export = _export(request, endpoint)
    accept_encoding = ",".join(request.headers.getall("Accept-Encoding", [])) or None
    try:
        coding = encoding.negotiate(accept_encoding, request.app[SETTINGS].compression)
    except encoding.NotAcceptableEncoding:
        raise problems.not_acceptable_encoding(accept_encoding, request.app[SETTINGS].compression) from None
    request[TIMING].encoding = coding
    return Reply(export, coding)


def _export(request: web.Request, endpoint: str) -> Export:
    settings = request.app[SETTINGS]
    timing = request[TIMING]
    timing.endpoint = endpoint
    streaming = endpoint == "chunked"
    allowed = {"format", "limit", "after_id", "columns"} | ({"page_size"} if streaming else set())
    accept = ",".join(request.headers.getall("Accept", [])) or None
    extension = request.match_info.get("extension")
    try:
        export = parse_export(
            request.query,
            accept,
            allowed,
            default_page_size=settings.page_size if streaming else None,
            max_page_size=settings.max_page_size,
            first_page_size=settings.first_page_size if streaming else None,
            path_format=None if extension is None else BY_EXTENSION[extension],
        )
    except BadParameter as exc:
        raise problems.bad_parameter(exc) from None
    except NotAcceptable:
        raise problems.not_acceptable(accept) from None
    except FormatUnavailable as exc:
        raise problems.format_unavailable(exc.format) from None
    timing.format = export.format.name
    return export


def _content_headers(response: web.StreamResponse, reply: Reply) -> None:
    response.content_type = reply.export.format.content_type
    response.charset = reply.export.format.charset
    response.headers["Cache-Control"] = "no-store"
    # Say plainly that a range is not served: a client must not fetch parts of an export in parallel.
    response.headers["Accept-Ranges"] = "none"
    # The bytes depend on Accept-Encoding: caches must not hand one client's coding to another.
    response.headers.add("Vary", "Accept-Encoding")
    if reply.coding != encoding.IDENTITY:
        response.headers["Content-Encoding"] = reply.coding
    fmt = reply.export.format
    # A download is a file: points.csv (text is for reading in place).
    disposition = "inline" if fmt.name == "text" else "attachment"
    response.headers["Content-Disposition"] = f'{disposition}; filename="points.{fmt.extension}"'


def _count_headers(response: web.StreamResponse, count: RowCount | None) -> None:
    """How many rows the body carries: X-Row-Count when exact, X-Row-Count-Estimate otherwise."""
    if count is not None:
        response.headers["X-Row-Count" if count.exact else "X-Row-Count-Estimate"] = str(count.rows)


def _start_counting(request: web.Request, export: Export, lanes: Lanes) -> asyncio.Task[RowCount]:
    task = asyncio.ensure_future(request.app[COUNTER].expected(lanes, export))
    # Its outcome may be dropped (the headers went without it): never a "never retrieved" warning.
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    return task


async def _headers_only(request: web.Request, reply: Reply) -> web.StreamResponse:
    """HEAD: the headers a GET would send, and no export run (so no length: it is not known)."""
    response = web.StreamResponse()
    _content_headers(response, reply)
    # Without a count if the database fails here: its trouble shows on the GET itself.
    with contextlib.suppress(*DB_ERRORS):
        _count_headers(response, await _start_counting(request, reply.export, request.app[LANES]))
    await response.prepare(request)
    request[TIMING].mark_headers(response.status)
    await response.write_eof()
    return response


class Buffered:
    """/standard's sink: collects every chunk, then sends one body (compressed whole) with a Content-Length."""

    def __init__(self, request: web.Request, reply: Reply, lanes: Lanes) -> None:
        self.request = request
        self.lanes = lanes
        self.reply = reply
        self.export = reply.export
        self.response = web.Response()
        self._chunks: list[Chunk] = []

    async def check(self) -> None:
        """Refuse an export too big to buffer before running it (413 pointing to /chunked)."""
        settings = self.request.app[SETTINGS]
        cap = settings.standard_max_rows
        if await rows_exceed(self.lanes, self.export.after_id, self.export.limit, cap):
            raise problems.too_many_rows(self.request, cap)

    async def before_export(self) -> None:
        await self.check()

    async def take(self, chunk: Chunk) -> None:
        self._chunks.append(chunk)

    async def finish(self) -> None:
        timing = self.request[TIMING]
        started = time.perf_counter()
        body = b"".join(part for chunk in self._chunks for part in chunk.parts)
        rows = sum(chunk.rows for chunk in self._chunks)
        self._chunks.clear()
        encoder = self.reply.encoder(self.request.app[SETTINGS])
        if encoder is not None:
            # Tens of megabytes: off the event loop (the compressors release the GIL).
            body = await asyncio.to_thread(_compress_whole, encoder, body)
        timing.encode_seconds += time.perf_counter() - started
        self.response.body = body
        _content_headers(self.response, self.reply)
        _count_headers(self.response, RowCount(rows, exact=True))
        self.response.headers["Server-Timing"] = (
            f"db;dur={timing.db_ms}, encode;dur={timing.encode_ms}, total;dur={timing.elapsed_ms()}"
        )
        await self.response.prepare(self.request)
        timing.mark_headers(self.response.status)
        await send_within(self.request, self.response.write_eof(), self.request.app[SETTINGS].send_timeout)
        timing.mark_sent(len(body))
        timing.rows = rows


def _compress_whole(encoder: encoding.Encoder, body: bytes) -> bytes:
    return encoder.body(body) + encoder.finish()


class Streamed:
    """/chunked's sink: sends the headers with the first chunk, then writes each chunk as it comes
    (compressed and flushed on its own when the client asked for a coding)."""

    def __init__(self, request: web.Request, reply: Reply, lanes: Lanes) -> None:
        self.request = request
        self.lanes = lanes
        self.reply = reply
        self.export = reply.export
        self.response = web.StreamResponse()
        self.encoder = reply.encoder(request.app[SETTINGS])
        self._count: asyncio.Task[RowCount] | None = None

    async def check(self) -> None:
        pass

    async def before_export(self) -> None:
        # Counted beside the first page, on a connection of its own.
        self._count = _start_counting(self.request, self.export, self.lanes)

    async def _expected_rows(self) -> RowCount | None:
        """The count, if it is known within COUNT_WAIT_SECONDS of the first page: it never holds the first byte."""
        assert self._count is not None
        try:
            return await asyncio.wait_for(asyncio.shield(self._count), COUNT_WAIT_SECONDS)
        except (TimeoutError, *DB_ERRORS):
            self._count.cancel()
            return None

    async def take(self, chunk: Chunk) -> None:
        timing = self.request[TIMING]
        if not self.response.prepared:
            # The first page comes before the headers: a database failure up to here is still a clean 503.
            _content_headers(self.response, self.reply)
            _count_headers(self.response, await self._expected_rows())
            # A proxy must pass each chunk on as it comes (nginx honours this even in its stock configuration).
            self.response.headers["X-Accel-Buffering"] = "no"
            self.response.headers["Server-Timing"] = f"db;dur={timing.db_ms}"
            # No length: aiohttp frames the body with chunks for HTTP/1.1 and by closing the connection for
            # HTTP/1.0 clients (curl --http1.0, ab, a stock nginx upstream), which must then not be kept alive.
            if self.request.version < HttpVersion11:
                self.response.force_close()
            await self.response.prepare(self.request)
            timing.mark_headers(self.response.status)
        data = b"".join(chunk.parts)
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


async def _send_export(
    request: web.Request, reply: Reply, make_sink: Callable[[Lanes], Buffered | Streamed]
) -> web.StreamResponse:
    """Run the export into a sink, within request_deadline, reading from the first source that works: a
    replica that fails before anything was sent is set aside and the next one (at last the primary) tried.
    Before the headers are out a failure is a JSON error (503 for the database or the deadline); after,
    the connection is cut, never ended cleanly."""
    settings = request.app[SETTINGS]
    timing = request[TIMING]
    sources = request.app[SOURCES]
    if request.method == "HEAD":
        # The same checks as a GET (a 413 stays a 413), then the headers alone, from the primary.
        try:
            await make_sink(request.app[LANES]).check()
        except DB_ERRORS as exc:
            raise problems.unavailable(exc) from None
        return await _headers_only(request, reply)
    deadline = asyncio.timeout(settings.request_deadline)
    candidates = sources.for_export()
    sink = make_sink(candidates[0].lanes)
    try:
        async with deadline:
            for attempt, source in enumerate(candidates):
                assert source.lanes is not None
                sink = make_sink(source.lanes)
                timing.source = source.label
                try:
                    await _export_into(request, reply, sink, source.lanes)
                except DB_ERRORS as exc:
                    if sink.response.prepared or attempt == len(candidates) - 1:
                        raise
                    sources.failed(source, exc)
                    log.warning(
                        "%s failed before the first byte: reading from %s", source.name, candidates[attempt + 1].name
                    )
                    continue
                sources.worked(source)
                break
    except web.HTTPException:
        raise
    except (ClientGone, ClientConnectionResetError):
        # ClientConnectionResetError: aiohttp's own word for a transport the client already closed.
        timing.outcome = "client_gone"
        log.info("client went away after %d rows", timing.rows)
    except asyncio.CancelledError:
        if sink.response.prepared:
            timing.outcome = "aborted"
            abort(request)
        raise
    except Exception as exc:
        if not sink.response.prepared:
            if deadline.expired():
                raise problems.deadline_passed(settings.request_deadline) from None
            if isinstance(exc, DB_ERRORS):
                raise problems.unavailable(exc) from None
            raise
        # Headers are out: the only honest signal left is to cut the connection (no final chunk).
        timing.outcome = "aborted"
        abort(request)
        if isinstance(exc, ClientTooSlow):
            log.info(
                "client took no data for %g s (send_timeout): dropped after %d rows", settings.send_timeout, timing.rows
            )
        elif deadline.expired():
            log.error(
                "stream aborted after %d rows: request_deadline (%g s) passed", timing.rows, settings.request_deadline
            )
        else:
            log.error("stream aborted after %d rows: %s", timing.rows, _describe(exc))
    return sink.response


async def _export_into(request: web.Request, reply: Reply, sink: Buffered | Streamed, lanes: Lanes) -> None:
    """The export itself: where /standard and /chunked part ways is the sink, what it does with each chunk."""
    await sink.before_export()
    chunks = encoded_chunks(lanes, request.app[QUERIES], reply.export, request[TIMING])
    async with contextlib.aclosing(chunks):
        async for chunk in chunks:
            await sink.take(chunk)
    await sink.finish()


@requires_token
async def standard(request: web.Request) -> web.StreamResponse:
    """Every requested row from one COPY, the whole body built in memory, sent with a Content-Length."""
    reply = _reply(request, "standard")
    slots = request.app[STANDARD_SLOTS]
    # Each buffered body costs memory in proportion to its size: refuse at once rather than queue.
    if not slots.try_acquire():
        raise problems.standard_busy(slots.limit)
    try:
        return await _send_export(request, reply, lambda lanes: Buffered(request, reply, lanes))
    finally:
        slots.release()


@requires_token
async def chunked(request: web.Request) -> web.StreamResponse:
    """Each page written as its own chunk as soon as PostgreSQL returns it, awaiting every write."""
    reply = _reply(request, "chunked")
    return await _send_export(request, reply, lambda lanes: Streamed(request, reply, lanes))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}" if str(exc) else type(exc).__name__


async def healthz(request: web.Request) -> web.Response:
    """The primary and each replica: 200 while exports can be served (from a replica if need be), else 503."""
    sources = request.app[SOURCES]

    async def state(source: Source) -> dict[str, str]:
        described = {"name": source.label, "at": where(source.url)} if source.replica else {}
        try:
            await sources.ping(source)
        except DB_ERRORS as exc:
            if source.replica:
                sources.failed(source, exc)
            return {**described, "status": "unavailable", "error": type(exc).__name__}
        if source.replica:
            sources.worked(source)
        return {**described, "status": "ok"}

    primary, *replicas = await asyncio.gather(state(sources.primary), *(state(r) for r in sources.replicas))
    serving = primary["status"] == "ok" or any(replica["status"] == "ok" for replica in replicas)
    body: dict[str, object] = {"status": "ok" if serving else "unavailable", "database": primary["status"]}
    if primary["status"] != "ok":
        body["error"] = primary["error"]
    if replicas:
        body["replicas"] = replicas
    headers = None if serving else {"Retry-After": problems.RETRY_AFTER_SECONDS}
    return web.json_response(body, status=200 if serving else 503, headers=headers)
