"""The timing middleware: starts each request's clock, and writes its access-log line however it ends."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..forwarded import client_address
from ..keys import OBSERVER, SETTINGS, TIMING
from ..timing import RequestTiming

access_log = logging.getLogger("streaming_api.access")


def _fmt(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.2f}"


def log_request(request: web.Request, status: int, timing: RequestTiming) -> None:
    """One access-log line per request, figures in milliseconds."""
    timing.finish()
    access_log.info(
        "%s %s client=%s status=%s endpoint=%s format=%s encoding=%s outcome=%s rows=%d bytes=%d "
        "headers_ms=%s first_byte_ms=%s total_ms=%s db_ms=%.2f",
        request.method,
        request.path_qs[:300],
        client_address(request, request.app[SETTINGS].trusted_proxies),
        status,
        timing.endpoint or "-",
        timing.format or "-",
        timing.encoding or "-",
        timing.outcome,
        timing.rows,
        timing.bytes,
        _fmt(timing.headers_ms),
        _fmt(timing.first_byte_ms),
        _fmt(timing.total_ms),
        timing.db_ms,
    )


@web.middleware
async def timing_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Starts the clock outside the error and auth middlewares, so their answers (401, 404, 500) are timed
    and logged too, and writes the access-log line however the request ends."""
    timing = RequestTiming()
    request[TIMING] = timing
    observer = request.app.get(OBSERVER)
    if observer is not None:
        observer.started(request)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        if status == 500 and timing.status is not None:
            status = timing.status  # headers were out before the failure: that is the status the client got
        log_request(request, status, timing)
        if observer is not None:
            observer.finished(request, status, timing)
