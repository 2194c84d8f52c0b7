"""The routes: /standard buffers the whole body, /chunked streams it page by page, /healthz.

Both export endpoints run the same export with the same error path (`_send_export`); they differ only
in their sink, what is done with each chunk: `Buffered` collects it, `Streamed` writes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiohttp import ClientConnectionResetError, HttpVersion11, web

from ..db.pool import DB_ERRORS
from ..export.formats import NotAcceptable
from ..export.pages import Chunk, encoded_chunks
from ..export.request import BadParameter, Export, parse_export
from . import problems
from .guards import rows_exceed
from .keys import LANES, QUERIES, SETTINGS, STANDARD_SLOTS, TIMING
from .middleware.auth import requires_token
from .sending import ClientGone, ClientTooSlow, abort, send_within

log = logging.getLogger(__name__)


def _export(request: web.Request, endpoint: str) -> Export:
    settings = request.app[SETTINGS]
    timing = request[TIMING]
    timing.endpoint = endpoint
    streaming = endpoint == "chunked"
    allowed = {"format", "limit", "after_id"} | ({"page_size"} if streaming else set())
    accept = ",".join(request.headers.getall("Accept", [])) or None
    try:
        export = parse_export(
            request.query,
            accept,
            allowed,
            default_page_size=settings.page_size if streaming else None,
            max_page_size=settings.max_page_size,
            first_page_size=settings.first_page_size if streaming else None,
        )
    except BadParameter as exc:
        raise problems.bad_parameter(exc) from None
    except NotAcceptable:
        raise problems.not_acceptable(accept) from None
    timing.format = export.format.name
    return export


def _content_headers(response: web.StreamResponse, export: Export) -> None:
    response.content_type = export.format.content_type
    response.charset = export.format.charset
    response.headers["Cache-Control"] = "no-store"
    # Say plainly that a range is not served: a client must not fetch parts of an export in parallel.
    response.headers["Accept-Ranges"] = "none"


async def _headers_only(request: web.Request, export: Export) -> web.StreamResponse:
    """HEAD: the headers a GET would send, and no export run (so no length: it is not known)."""
    response = web.StreamResponse()
    _content_headers(response, export)
    await response.prepare(request)
    request[TIMING].mark_headers(response.status)
    await response.write_eof()
    return response


class Buffered:
    """/standard's sink: collects every chunk, then sends one body with a Content-Length."""

    def __init__(self, request: web.Request, export: Export) -> None:
        self.request = request
        self.export = export
        self.response = web.Response()
        self._chunks: list[Chunk] = []

    async def before_export(self) -> None:
        """Refuse an export too big to buffer before running it (413 pointing to /chunked)."""
        settings = self.request.app[SETTINGS]
        cap = settings.standard_max_rows
        if await rows_exceed(self.request.app[LANES], self.export.after_id, self.export.limit, cap):
            raise problems.too_many_rows(self.request, cap)

    async def take(self, chunk: Chunk) -> None:
        self._chunks.append(chunk)

    async def finish(self) -> None:
        timing = self.request[TIMING]
        started = time.perf_counter()
        body = b"".join(part for chunk in self._chunks for part in chunk.parts)
        rows = sum(chunk.rows for chunk in self._chunks)
        self._chunks.clear()
        timing.encode_seconds += time.perf_counter() - started
        self.response.body = body
        _content_headers(self.response, self.export)
        self.response.headers["Server-Timing"] = (
            f"db;dur={timing.db_ms}, encode;dur={timing.encode_ms}, total;dur={timing.elapsed_ms()}"
        )
        await self.response.prepare(self.request)
        timing.mark_headers(self.response.status)
        await send_within(self.request, self.response.write_eof(), self.request.app[SETTINGS].send_timeout)
        timing.mark_sent(len(body))
        timing.rows = rows


class Streamed:
    """/chunked's sink: sends the headers with the first chunk, then writes each chunk as it comes."""

    def __init__(self, request: web.Request, export: Export) -> None:
        self.request = request
        self.export = export
        self.response = web.StreamResponse()

    async def before_export(self) -> None:
        pass

    async def take(self, chunk: Chunk) -> None:
        timing = self.request[TIMING]
        if not self.response.prepared:
            # The first page comes before the headers: a database failure up to here is still a clean 503.
            _content_headers(self.response, self.export)
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
        if data:
            await send_within(self.request, self.response.write(data), self.request.app[SETTINGS].send_timeout)
            timing.mark_sent(len(data))
        timing.rows += chunk.rows

    async def finish(self) -> None:
        await send_within(self.request, self.response.write_eof(), self.request.app[SETTINGS].send_timeout)


async def _send_export(request: web.Request, export: Export, sink: Buffered | Streamed) -> web.StreamResponse:
    """Run the export into the sink, within request_deadline. Before the headers are out a failure is a
    JSON error (503 for the database or the deadline); after, the connection is cut, never ended cleanly."""
    settings = request.app[SETTINGS]
    timing = request[TIMING]
    if request.method == "HEAD":
        # The same checks as a GET (a 413 stays a 413), then the headers alone.
        try:
            await sink.before_export()
        except DB_ERRORS as exc:
            raise problems.unavailable(exc) from None
        return await _headers_only(request, export)
    deadline = asyncio.timeout(settings.request_deadline)
    try:
        async with deadline:
            await sink.before_export()
            chunks = encoded_chunks(request.app[LANES], request.app[QUERIES], export, timing)
            async with contextlib.aclosing(chunks):
                async for chunk in chunks:
                    await sink.take(chunk)
            await sink.finish()
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


@requires_token
async def standard(request: web.Request) -> web.StreamResponse:
    """Every requested row from one COPY, the whole body built in memory, sent with a Content-Length."""
    export = _export(request, "standard")
    slots = request.app[STANDARD_SLOTS]
    # Each buffered body costs memory in proportion to its size: refuse at once rather than queue.
    if not slots.try_acquire():
        raise problems.standard_busy(slots.limit)
    try:
        return await _send_export(request, export, Buffered(request, export))
    finally:
        slots.release()


@requires_token
async def chunked(request: web.Request) -> web.StreamResponse:
    """Each page written as its own chunk as soon as PostgreSQL returns it, awaiting every write."""
    export = _export(request, "chunked")
    return await _send_export(request, export, Streamed(request, export))


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}" if str(exc) else type(exc).__name__


async def healthz(request: web.Request) -> web.Response:
    try:
        await request.app[LANES].ping()
    except DB_ERRORS as exc:
        return web.json_response(
            {"status": "unavailable", "database": type(exc).__name__},
            status=503,
            headers={"Retry-After": problems.RETRY_AFTER_SECONDS},
        )
    return web.json_response({"status": "ok", "database": "ok"})
