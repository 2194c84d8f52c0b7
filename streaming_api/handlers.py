"""The routes: /standard buffers the whole body, /chunked streams it page by page, /healthz."""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg
from aiohttp import web

from .auth import requires_token
from .config import SETTINGS
from .db import DB_ERRORS, LANES, ping
from .errors import json_error
from .export import QUERIES, BadParameter, Chunk, Export, encoded_chunks, parse_export
from .formats import FORMATS, NotAcceptable
from .instrumentation import TIMING, RequestTiming
from .limits import STANDARD_SLOTS, ClientGone, ClientTooSlow, rows_exceed, send_within

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = "5"


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
        raise json_error(web.HTTPBadRequest, "bad_parameter", str(exc), parameter=exc.name) from None
    except NotAcceptable:
        offered = [f.content_type for f in FORMATS.values()]
        raise json_error(
            web.HTTPNotAcceptable,
            "not_acceptable",
            f"no offered format matches Accept: {accept[:200]!r}; offered: {', '.join(offered)} "
            f"(or ?format={'|'.join(FORMATS)})",
            offered=offered,
        ) from None
    timing.format = export.format.name
    return export


class HTTPTooManyRows(web.HTTPClientError):
    status_code = 413


def _unavailable(exc: BaseException) -> web.HTTPException:
    if isinstance(exc, asyncpg.QueryCanceledError):
        log.warning("query cancelled by statement_timeout before the response started")
        return json_error(
            web.HTTPServiceUnavailable,
            "query_timeout",
            "the database query ran longer than statement_timeout; retry later or ask for fewer rows",
            {"Retry-After": RETRY_AFTER_SECONDS},
        )
    log.warning("database unavailable: %s", type(exc).__name__)
    return json_error(
        web.HTTPServiceUnavailable,
        "database_unavailable",
        "the database did not answer; retry later",
        {"Retry-After": RETRY_AFTER_SECONDS},
    )


def _deadline_passed(seconds: float) -> web.HTTPException:
    log.warning("request_deadline (%g s) passed before the response started", seconds)
    return json_error(
        web.HTTPServiceUnavailable,
        "deadline_exceeded",
        f"the request did not start within request_deadline ({seconds:g} s); retry later or ask for fewer rows",
        {"Retry-After": RETRY_AFTER_SECONDS},
    )


def _standard_busy(limit: int) -> web.HTTPException:
    return json_error(
        web.HTTPServiceUnavailable,
        "standard_busy",
        f"/standard is already building {limit} buffered responses (standard_max_concurrency); "
        "retry later, or use /chunked, which streams without buffering",
        {"Retry-After": RETRY_AFTER_SECONDS},
    )


def _too_many_rows(request: web.Request, cap: int) -> web.HTTPException:
    chunked_url = str(request.rel_url.with_path("/chunked").with_query(request.rel_url.query))
    return json_error(
        HTTPTooManyRows,
        "too_many_rows",
        f"this request would return more than {cap:,} rows (standard_max_rows), too many to buffer; "
        f"/chunked streams any number of rows: {chunked_url}",
        max_rows=cap,
        chunked=chunked_url,
    )


def _content_headers(response: web.StreamResponse, export: Export) -> None:
    response.content_type = export.format.content_type
    response.charset = export.format.charset
    response.headers["Cache-Control"] = "no-store"


@requires_token
async def standard(request: web.Request) -> web.StreamResponse:
    """Fetch every requested row in one query, build the whole body, send it with a Content-Length."""
    export = _export(request, "standard")
    slots = request.app[STANDARD_SLOTS]
    # Each buffered body costs memory in proportion to its size: refuse at once rather than queue.
    if not slots.try_acquire():
        raise _standard_busy(slots.limit)
    try:
        return await _buffered(request, export)
    finally:
        slots.release()


async def _buffered(request: web.Request, export: Export) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    timing = request[TIMING]
    lanes = request.app[LANES]
    response = web.Response()
    try:
        async with asyncio.timeout(settings.request_deadline):
            try:
                if await rows_exceed(lanes, export.after_id, export.limit, settings.standard_max_rows):
                    raise _too_many_rows(request, settings.standard_max_rows)
                chunks = [c async for c in encoded_chunks(lanes, request.app[QUERIES], export, timing)]
            except DB_ERRORS as exc:
                raise _unavailable(exc) from None
            started = time.perf_counter()
            body = b"".join(part for chunk in chunks for part in chunk.parts)
            rows = sum(chunk.rows for chunk in chunks)
            del chunks
            timing.encode_seconds += time.perf_counter() - started
            response.body = body
            _content_headers(response, export)
            response.headers["Server-Timing"] = (
                f"db;dur={timing.db_ms}, encode;dur={timing.encode_ms}, total;dur={timing.elapsed_ms()}"
            )
            await response.prepare(request)
            timing.mark_headers(response.status)
            await send_within(request, response.write_eof(), settings.send_timeout)
    except TimeoutError:
        if not response.prepared:
            raise _deadline_passed(settings.request_deadline) from None
        _abort(request, timing)
        log.error("response aborted: request_deadline (%g s) passed while sending", settings.request_deadline)
        return response
    except ClientGone:
        timing.outcome = "client_gone"
        log.info("client went away before the body was sent")
        return response
    except ClientTooSlow:
        _abort(request, timing)
        log.info("client took no data for %g s (send_timeout): dropped", settings.send_timeout)
        return response
    except asyncio.CancelledError:
        if response.prepared:
            _abort(request, timing)
        raise
    timing.mark_sent(len(body))
    timing.rows = rows
    return response


@requires_token
async def chunked(request: web.Request) -> web.StreamResponse:
    """Write each page as its own chunk as soon as PostgreSQL returns it, awaiting every write."""
    export = _export(request, "chunked")
    settings = request.app[SETTINGS]
    timing = request[TIMING]
    chunks = encoded_chunks(request.app[LANES], request.app[QUERIES], export, timing)
    response = web.StreamResponse()
    try:
        async with asyncio.timeout(settings.request_deadline):
            try:
                # The first page comes before the headers: a database failure here is still a clean 503.
                first = await anext(chunks)
            except DB_ERRORS as exc:
                raise _unavailable(exc) from None
            _content_headers(response, export)
            response.headers["X-Accel-Buffering"] = "no"
            response.headers["Server-Timing"] = f"db;dur={timing.db_ms}"
            response.enable_chunked_encoding()
            await response.prepare(request)
            timing.mark_headers(response.status)
            await _write(request, response, first, timing, settings.send_timeout)
            async for chunk in chunks:
                await _write(request, response, chunk, timing, settings.send_timeout)
            await send_within(request, response.write_eof(), settings.send_timeout)
    except web.HTTPException:
        raise
    except TimeoutError:
        if not response.prepared:
            raise _deadline_passed(settings.request_deadline) from None
        _abort(request, timing)
        log.error(
            "stream aborted after %d rows: request_deadline (%g s) passed", timing.rows, settings.request_deadline
        )
    except ClientGone:
        timing.outcome = "client_gone"
        log.info("client went away after %d rows", timing.rows)
    except ClientTooSlow:
        _abort(request, timing)
        log.info(
            "client took no data for %g s (send_timeout): dropped after %d rows", settings.send_timeout, timing.rows
        )
    except asyncio.CancelledError:
        if response.prepared:
            _abort(request, timing)
        raise
    except Exception as exc:
        if not response.prepared:
            raise
        # Headers are out: the only honest signal left is to cut the connection (no final chunk).
        _abort(request, timing)
        log.error("stream aborted after %d rows: %s", timing.rows, _describe(exc))
    finally:
        await chunks.aclose()
    return response


async def _write(
    request: web.Request, response: web.StreamResponse, chunk: Chunk, timing: RequestTiming, send_timeout: float
) -> None:
    data = b"".join(chunk.parts)
    if data:
        await send_within(request, response.write(data), send_timeout)
        timing.mark_sent(len(data))
    timing.rows += chunk.rows


def _abort(request: web.Request, timing: RequestTiming) -> None:
    timing.outcome = "aborted"
    if request.transport is not None:
        request.transport.abort()


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:200]}" if str(exc) else type(exc).__name__


async def healthz(request: web.Request) -> web.Response:
    try:
        await ping(request.app[LANES])
    except DB_ERRORS as exc:
        return web.json_response(
            {"status": "unavailable", "database": type(exc).__name__},
            status=503,
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    return web.json_response({"status": "ok", "database": "ok"})
