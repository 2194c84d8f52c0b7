"""The routes: /standard buffers the whole body, /chunked streams it page by page, /healthz."""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web

from .auth import requires_token
from .config import SETTINGS
from .db import DB_ERRORS, POOL, ping
from .errors import json_error
from .export import QUERIES, BadParameter, Chunk, Export, encoded_chunks, parse_export
from .formats import FORMATS, NotAcceptable
from .instrumentation import TIMING, RequestTiming

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


def _unavailable(exc: BaseException) -> web.HTTPException:
    log.warning("database unavailable: %s", type(exc).__name__)
    return json_error(
        web.HTTPServiceUnavailable,
        "database_unavailable",
        "the database did not answer; retry later",
        {"Retry-After": RETRY_AFTER_SECONDS},
    )


def _content_headers(response: web.StreamResponse, export: Export) -> None:
    response.content_type = export.format.content_type
    response.charset = export.format.charset
    response.headers["Cache-Control"] = "no-store"


@requires_token
async def standard(request: web.Request) -> web.StreamResponse:
    """Fetch every requested row in one query, build the whole body, send it with a Content-Length."""
    export = _export(request, "standard")
    timing = request[TIMING]
    try:
        chunks = [c async for c in encoded_chunks(request.app[POOL], request.app[QUERIES], export, timing)]
    except DB_ERRORS as exc:
        raise _unavailable(exc) from None
    started = time.perf_counter()
    body = b"".join(part for chunk in chunks for part in chunk.parts)
    rows = sum(chunk.rows for chunk in chunks)
    del chunks
    timing.encode_seconds += time.perf_counter() - started
    response = web.Response(body=body)
    _content_headers(response, export)
    response.headers["Server-Timing"] = (
        f"db;dur={timing.db_ms}, encode;dur={timing.encode_ms}, total;dur={timing.elapsed_ms()}"
    )
    await response.prepare(request)
    timing.mark_headers()
    try:
        await response.write_eof()
    except ConnectionError:
        timing.outcome = "client_gone"
        log.info("client went away before the body was sent")
        return response
    timing.mark_sent(len(body))
    timing.rows = rows
    return response


@requires_token
async def chunked(request: web.Request) -> web.StreamResponse:
    """Write each page as its own chunk as soon as PostgreSQL returns it, awaiting every write."""
    export = _export(request, "chunked")
    timing = request[TIMING]
    chunks = encoded_chunks(request.app[POOL], request.app[QUERIES], export, timing)
    try:
        # The first page comes before the headers: a database failure here is still a clean 503.
        first = await anext(chunks)
    except DB_ERRORS as exc:
        await chunks.aclose()
        raise _unavailable(exc) from None
    response = web.StreamResponse()
    _content_headers(response, export)
    response.headers["X-Accel-Buffering"] = "no"
    response.headers["Server-Timing"] = f"db;dur={timing.db_ms}"
    response.enable_chunked_encoding()
    await response.prepare(request)
    timing.mark_headers()
    try:
        await _write(response, first, timing)
        async for chunk in chunks:
            await _write(response, chunk, timing)
    except ConnectionError:
        timing.outcome = "client_gone"
        log.info("client went away after %d rows", timing.rows)
        return response
    except asyncio.CancelledError:
        _abort(request, timing)
        raise
    except Exception as exc:
        # Headers are out: the only honest signal left is to cut the connection (no final chunk).
        _abort(request, timing)
        log.error("stream aborted after %d rows: %s", timing.rows, _describe(exc))
        return response
    finally:
        await chunks.aclose()
    await response.write_eof()
    return response


async def _write(response: web.StreamResponse, chunk: Chunk, timing: RequestTiming) -> None:
    data = b"".join(chunk.parts)
    if data:
        await response.write(data)
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
        await ping(request.app[POOL])
    except DB_ERRORS as exc:
        return web.json_response(
            {"status": "unavailable", "database": type(exc).__name__},
            status=503,
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )
    return web.json_response({"status": "ok", "database": "ok"})
