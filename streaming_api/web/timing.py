"""Per-request timing: time to headers, to first body byte, total; rows, bytes, database time.

Measured on the server with time.perf_counter(), from the moment the middleware sees the request.
"First byte" is when the first body bytes were handed to the transport.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web


@dataclass
class RequestTiming:
    started: float = field(default_factory=time.perf_counter)
    endpoint: str = ""
    format: str = ""
    # The content coding the body went out in (identity, zstd, gzip).
    encoding: str = ""
    # The database the rows came from (primary, replica1...).
    source: str = ""
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

    def mark_whole_body(self, nbytes: int) -> None:
        """A body returned whole (a JSON error, /healthz): aiohttp sends it after the log line, so it counts now."""
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


class RequestObserver(Protocol):
    """Told when each request starts and ends, with the same timing the access log writes (/metrics)."""

    def started(self, request: web.Request) -> None: ...

    def finished(self, request: web.Request, status: int, timing: RequestTiming) -> None: ...
