"""The timed HTTP client: raw asyncio connections that only store what arrives, and decode it afterwards.

While the clock runs the client does the least it can: one recv of up to 256 KiB per wake-up, and per
piece one clock reading and one list append. No HTTP parsing, no body parsing. Each request goes on its
own connection (opened before its clock starts) with `Connection: close`, so the server's close marks
the end and nothing needs to be understood to know the response is over. The status line, headers,
chunked framing and timings are recovered from the stored pieces after the clock has stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from urllib.parse import urlsplit

USER_AGENT = "streaming_api-bench"


class ResponseError(ValueError):
    """The bytes received are not a whole HTTP response (aborted transfer, bad framing...)."""


@dataclass(frozen=True)
class Target:
    """Where the server is and how to authenticate; paths are joined to the URL's own path."""

    scheme: str
    host: str
    port: int
    base_path: str
    token: str | None

    @classmethod
    def from_url(cls, url: str, token: str | None) -> Target:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--url must be http://host[:port] or https://..., got {url!r}")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"), token)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}{self.base_path}"

    def request(self, path_qs: str, coding: str = "identity") -> bytes:
        """The request's bytes; `coding` is the one content coding it accepts (Accept-Encoding)."""
        lines = [
            f"GET {self.base_path}{path_qs} HTTP/1.1",
            f"Host: {self.host}:{self.port}",
            f"User-Agent: {USER_AGENT}",
            f"Accept-Encoding: {coding}",
            "Connection: close",
        ]
        if self.token:
            lines.append(f"Authorization: JWT {self.token}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass
class Received:
    """Everything one request produced on the wire, with the clock reading of each piece."""

    path_qs: str
    # The content coding asked for (Accept-Encoding): identity, gzip or zstd.
    coding: str = "identity"
    started: float = 0.0
    pieces: list[bytes] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    nbytes: int = 0
    closed_at: float | None = None
    # Set when the connection failed or the request ran out of time (the pieces are what arrived).
    error: str | None = None
    # Why the connection ended abnormally (a reset), if it did: said when the response is incomplete.
    lost: str | None = None


class _Recorder(asyncio.Protocol):
    def __init__(self, received: Received, done: asyncio.Future[None]) -> None:
        self.received = received
        self.done = done
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        # The whole of the client's work while the clock runs.
        received = self.received
        received.times.append(time.perf_counter())
        received.pieces.append(data)
        received.nbytes += len(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.received.closed_at = time.perf_counter()
        if exc is not None:
            self.received.lost = f"{type(exc).__name__}: {exc}"
        if not self.done.done():
            self.done.set_result(None)


def _ssl_context(target: Target) -> ssl.SSLContext | None:
    return ssl.create_default_context() if target.scheme == "https" else None


async def fetch_together(target: Target, received: list[Received], within_seconds: float) -> list[Received]:
    """Open one connection per request, then send every request at once; wait until all are closed.

    Each request's clock starts just before its request is written, after its connection is open.
    """
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[None]] = [loop.create_future() for _ in received]
    context = _ssl_context(target)

    async def connect(index: int) -> _Recorder | None:
        try:
            _, protocol = await loop.create_connection(
                lambda: _Recorder(received[index], futures[index]), target.host, target.port, ssl=context
            )
        except OSError as exc:
            received[index].error = f"cannot connect to {target.url}: {exc}"
            futures[index].set_result(None)
            return None
        return protocol

    recorders = await asyncio.gather(*(connect(i) for i in range(len(received))))
    for recorder, rec in zip(recorders, received, strict=True):
        if recorder is not None and recorder.transport is not None:
            rec.started = time.perf_counter()
            recorder.transport.write(target.request(rec.path_qs, rec.coding))
    try:
        async with asyncio.timeout(within_seconds):
            await asyncio.gather(*futures)
    except TimeoutError:
        for recorder, rec in zip(recorders, received, strict=True):
            if rec.closed_at is None:
                rec.error = f"no complete response within {within_seconds:g} s"
                if recorder is not None and recorder.transport is not None:
                    recorder.transport.abort()
    return received


async def fetch(target: Target, path_qs: str, within_seconds: float = 30.0) -> Received:
    return (await fetch_together(target, [Received(path_qs)], within_seconds))[0]


@dataclass
class Response:
    """A decoded response: status, headers, body, and when its parts arrived (perf_counter seconds)."""

    status: int
    headers: dict[str, str]
    body: bytes
    headers_at: float
    # When the first body byte arrived (None for an empty body), and the last byte of the response.
    first_byte_at: float | None
    last_byte_at: float
    # (seconds since the request was sent, body bytes received so far), one point per piece. The body is
    # as it was sent: encoded when the response names a Content-Encoding.
    progress: list[tuple[float, int]]
    wire_bytes: int


def _header_block(raw: bytes) -> tuple[int, dict[str, str], int]:
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        raise ResponseError("the connection closed before the response headers were complete")
    lines = raw[:end].decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/") or not status_line[1].isdigit():
        raise ResponseError(f"not an HTTP response: {lines[0][:80]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return int(status_line[1]), headers, end + 4


def _dechunk(raw: bytes, start: int) -> tuple[list[tuple[int, int]], int]:
    """Spans (raw offset, length) of the chunk data, and the offset just after the last chunk."""
    spans = []
    pos = start
    while True:
        line_end = raw.find(b"\r\n", pos)
        if line_end < 0:
            raise ResponseError(f"transfer aborted: the connection closed inside the chunked body after {pos:,} bytes")
        size_text = raw[pos:line_end].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ResponseError(f"bad chunk size line {raw[pos:line_end][:40]!r} at byte {pos:,}") from None
        data_start = line_end + 2
        if size == 0:
            # Trailers (none expected) end with an empty line.
            trailer_end = raw.find(b"\r\n", data_start)
            while trailer_end > data_start:
                data_start = trailer_end + 2
                trailer_end = raw.find(b"\r\n", data_start)
            if trailer_end < 0:
                raise ResponseError("transfer aborted: the connection closed inside the last chunk")
            return spans, trailer_end + 2
        if len(raw) < data_start + size + 2:
            raise ResponseError(
                f"transfer aborted: a {size:,}-byte chunk at byte {data_start:,} was cut off "
                "(the connection closed before the final zero-length chunk)"
            )
        if raw[data_start + size : data_start + size + 2] != b"\r\n":
            raise ResponseError(f"chunk at byte {data_start:,} is not followed by CRLF")
        spans.append((data_start, size))
        pos = data_start + size + 2


def decode(received: Received) -> Response:
    """The response from its stored pieces, or ResponseError saying why it is not whole."""
    if received.error is not None:
        raise ResponseError(received.error)
    try:
        return _decode(received)
    except ResponseError as exc:
        if received.lost:
            raise ResponseError(f"{exc} (connection lost: {received.lost})") from None
        raise


def _decode(received: Received) -> Response:
    raw = b"".join(received.pieces)
    if not raw:
        raise ResponseError("the connection closed without a response")
    status, headers, body_start = _header_block(raw)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        spans, message_end = _dechunk(raw, body_start)
    elif "content-length" in headers:
        length = int(headers["content-length"])
        if len(raw) - body_start < length:
            raise ResponseError(
                f"transfer aborted: {len(raw) - body_start:,} of the {length:,} bytes of Content-Length arrived"
            )
        spans, message_end = [(body_start, length)], body_start + length
    else:
        # No framing: the body runs to the close.
        spans, message_end = [(body_start, len(raw) - body_start)], len(raw)
    if len(raw) > message_end:
        raise ResponseError(f"{len(raw) - message_end:,} unexpected bytes after the end of the response")
    spans = [(offset, length) for offset, length in spans if length]
    body = b"".join(raw[offset : offset + length] for offset, length in spans)

    # Clock reading of the piece that holds a given raw byte offset.
    ends, total = [], 0
    for piece in received.pieces:
        total += len(piece)
        ends.append(total)

    def arrival(offset: int) -> float:
        return received.times[bisect_left(ends, offset + 1)]

    progress, span_index, body_done = [], 0, 0
    for end, at in zip(ends, received.times, strict=True):
        # Body bytes among the first `end` raw bytes: whole spans before it plus part of the one it cuts.
        while span_index < len(spans) and spans[span_index][0] + spans[span_index][1] <= end:
            body_done += spans[span_index][1]
            span_index += 1
        partial = 0
        if span_index < len(spans) and spans[span_index][0] < end:
            partial = end - spans[span_index][0]
        progress.append((at - received.started, body_done + partial))
    return Response(
        status=status,
        headers=headers,
        body=body,
        headers_at=arrival(body_start - 1),
        first_byte_at=arrival(spans[0][0]) if spans else None,
        last_byte_at=arrival(message_end - 1),
        progress=progress,
        wire_bytes=len(raw),
    )


def server_timing(header: str | None) -> dict[str, float]:
    """Server-Timing "db;dur=1.2, total;dur=3.4" as {"db": 1.2, "total": 3.4} (milliseconds)."""
    figures: dict[str, float] = {}
    for metric in (header or "").split(","):
        name, *params = (p.strip() for p in metric.split(";"))
        for param in params:
            key, _, value = param.partition("=")
            if key.strip() == "dur" and name:
                with contextlib.suppress(ValueError):
                    figures[name] = float(value)
    return figures
