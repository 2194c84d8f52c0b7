"""Per-request timing: time to headers, to first body byte, total; rows, bytes, database time.

Measured on the server with time.perf_counter(), from the moment the middleware sees the request.
"First byte" is when the first body bytes were handed to the transport.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web

access_log = logging.getLogger("streaming_api.access")


@dataclass
class RequestTiming:
    started: float = field(default_factory=time.perf_counter)
    endpoint: str = ""
    format: str = ""
    headers_at: float | None = None
    first_byte_at: float | None = None
    finished_at: float | None = None
    rows: int = 0
    bytes: int = 0
    db_seconds: float = 0.0
    encode_seconds: float = 0.0
    # The status sent in the headers, once they are out (what the log reports if the stream then fails).
    status: int | None = None
    # "complete", "client_gone" or "aborted" (a failure after headers were sent).
    outcome: str = "complete"

    def mark_headers(self, status: int) -> None:
        self.headers_at = time.perf_counter()
        self.status = status

    def mark_sent(self, nbytes: int) -> None:
        if self.first_byte_at is None and nbytes:
            self.first_byte_at = time.perf_counter()
        self.bytes += nbytes

    def finish(self) -> None:
        if self.finished_at is None:
            self.finished_at = time.perf_counter()

    def _ms(self, at: float | None) -> float | None:
        return None if at is None else round((at - self.started) * 1000, 2)

    @property
    def headers_ms(self) -> float | None:
        return self._ms(self.headers_at)

    @property
    def first_byte_ms(self) -> float | None:
        return self._ms(self.first_byte_at)

    @property
    def total_ms(self) -> float | None:
        return self._ms(self.finished_at)

    @property
    def db_ms(self) -> float:
        return round(self.db_seconds * 1000, 2)

    @property
    def encode_ms(self) -> float:
        return round(self.encode_seconds * 1000, 2)

    def elapsed_ms(self) -> float:
        return round((time.perf_counter() - self.started) * 1000, 2)


TIMING = web.RequestKey("timing", RequestTiming)


class RequestObserver(Protocol):
    """Told when each request starts and ends, with the same timing the access log writes (/metrics)."""

    def started(self, request: web.Request) -> None: ...

    def finished(self, request: web.Request, status: int, timing: RequestTiming) -> None: ...


OBSERVER = web.AppKey("request_observer", RequestObserver)


def _fmt(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.2f}"


def log_request(request: web.Request, status: int, timing: RequestTiming) -> None:
    """One access-log line per request, figures in milliseconds."""
    timing.finish()
    access_log.info(
        "%s %s status=%s endpoint=%s format=%s outcome=%s rows=%d bytes=%d "
        "headers_ms=%s first_byte_ms=%s total_ms=%s db_ms=%.2f",
        request.method,
        request.path_qs[:300],
        status,
        timing.endpoint or "-",
        timing.format or "-",
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
    """Outermost: starts the clock, and writes the access-log line however the request ends."""
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
