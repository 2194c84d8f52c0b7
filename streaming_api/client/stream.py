"""A Python consumer of /chunked and /standard: rows as they arrive, resuming after dropped connections.

    async for row in stream_rows("http://127.0.0.1:8080/chunked", token, format="csv"):
        ...

A dropped connection or an incomplete body is retried with backoff from the last id received
(`after_id`), so every row arrives exactly once, in id order. 401 and 400 raise at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from .records import FORMATS, BodyError, RecordSplitter, Row, RowParser, row_id

log = logging.getLogger(__name__)

# The query parameters the client sets itself on every (re)request.
OWN_PARAMETERS = ("format", "after_id", "limit", "page_size")
MAX_BACKOFF_SECONDS = 8.0
# A server's Retry-After is honoured up to this long.
MAX_RETRY_AFTER_SECONDS = 30.0
READ_CHUNK_BYTES = 1 << 16


class StreamError(Exception):
    """Base of the errors stream_rows raises (besides BodyError for a malformed body)."""


class RequestRejected(StreamError):
    """The server refused the request (a 4xx other than 429); retrying would not help."""

    def __init__(self, status: int, error: str, detail: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail
        self.body = body or {}


class Unauthorized(RequestRejected):
    """401: the token is missing, malformed, expired or signed with another key."""

    def __str__(self) -> str:
        return f"{super().__str__()} (python run.py token mints a token)"


class BadRequest(RequestRejected):
    """400: a query parameter was refused; `parameter` names it when the server said which."""

    @property
    def parameter(self) -> str | None:
        return self.body.get("parameter")


class GaveUp(StreamError):
    """The connection kept failing: `attempts` in a row failed, none after the first bringing a row.

    `last_id` is where to resume.
    """

    def __init__(self, attempts: int, rows: int, last_id: int, reason: str) -> None:
        super().__init__(
            f"gave up after {attempts} failed attempts in a row ({reason}); "
            f"{rows:,} rows received, last id {last_id} (resume with after_id={last_id})"
        )
        self.attempts = attempts
        self.rows = rows
        self.last_id = last_id
        self.reason = reason


class _Retryable(Exception):
    """One attempt failed in a way a new request may cure."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


@dataclass(frozen=True)
class Retry:
    """What on_retry is told before the client waits and asks again."""

    attempt: int
    retries: int
    delay: float
    reason: str
    rows: int
    last_id: int

    def __str__(self) -> str:
        return (
            f"{self.reason}; {self.rows:,} rows so far: resuming after id {self.last_id} "
            f"in {self.delay:.1f} s (retry {self.attempt} of {self.retries})"
        )


@dataclass(frozen=True)
class Batch:
    """Rows that arrived together, each with its exact bytes as the server wrote them.

    `head` is set on the first batch of each response: the bytes before the first record
    (the CSV header line, the JSON "[", nothing for NDJSON).
    """

    rows: list[Row]
    records: list[bytes]
    head: bytes | None = None


class _ResponseReader:
    """The rows and records of one response, as they arrive."""

    def __init__(self, fmt: str) -> None:
        self._splitter = RecordSplitter(fmt)
        self._parser = RowParser(fmt)
        self._head_sent = False

    def feed(self, data: bytes) -> Batch | None:
        consumed, records = self._splitter.feed(data)
        rows = self._parser.feed(consumed) if consumed else []
        if len(rows) != len(records):
            raise BodyError(f"{len(rows)} rows parsed from {len(records)} records: unexpected body layout")
        head = None
        if not self._head_sent and self._splitter.head is not None:
            head, self._head_sent = self._splitter.head, True
        if head is None and not rows:
            return None
        return Batch(rows, records, head)

    def close(self) -> None:
        """Raise _Retryable when the body stopped short of its end."""
        if self._splitter.pending:
            raise _Retryable("the body ended inside a record (incomplete transfer)")
        try:
            self._parser.close()
        except BodyError as exc:
            raise _Retryable(f"incomplete body: {exc}") from None


def _request_url(url: str, fmt: str, after_id: int, limit: int | None, page_size: int | None) -> URL:
    base = URL(url)
    clash = [name for name in OWN_PARAMETERS if name in base.query]
    if clash:
        raise ValueError(f"pass {clash[0]} as an argument, not in the URL")
    query: dict[str, str | int] = {"format": fmt, "after_id": after_id}
    if limit is not None:
        query["limit"] = limit
    if page_size is not None:
        query["page_size"] = page_size
    return base.update_query(query)


async def _rejection(response: aiohttp.ClientResponse) -> RequestRejected:
    try:
        body = await response.json(content_type=None)
    except (ValueError, aiohttp.ClientError):
        body = None
    if not isinstance(body, dict):
        body = {}
    error = str(body.get("error") or response.reason or "error")
    detail = str(body.get("detail") or f"HTTP {response.status}")
    kind = {401: Unauthorized, 400: BadRequest}.get(response.status, RequestRejected)
    return kind(response.status, error, detail, body)


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    try:
        return min(float(response.headers["Retry-After"]), MAX_RETRY_AFTER_SECONDS)
    except (KeyError, ValueError):
        return None


async def stream_batches(
    url: str,
    token: str,
    format: str = "ndjson",
    after_id: int = 0,
    *,
    limit: int | None = None,
    page_size: int | None = None,
    retries: int = 5,
    backoff: float = 0.5,
    read_timeout: float = 60.0,
    session: aiohttp.ClientSession | None = None,
    on_retry: Callable[[Retry], None] | None = None,
    compressed: bool = True,
) -> AsyncIterator[Batch]:
    """Batches of rows with their exact bytes, resuming after drops; see stream_rows for the arguments."""
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; one of {', '.join(FORMATS)}")
    if retries < 0 or backoff < 0:
        raise ValueError("retries and backoff must be >= 0")
    own_session = session is None
    if session is None:
        session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=read_timeout)
        )
    # zstd: about a seventh of the bytes, decoded by aiohttp as they arrive (page by page).
    headers = {"Authorization": f"JWT {token}", "Accept-Encoding": "zstd, gzip;q=0.5" if compressed else "identity"}
    received = 0
    last_id = after_id
    failures = 0
    try:
        while limit is None or received < limit:
            remaining = None if limit is None else limit - received
            request_url = _request_url(url, format, last_id, remaining, page_size)
            reader = _ResponseReader(format)
            progressed = False
            try:
                async with session.get(request_url, headers=headers) as response:
                    if response.status >= 500 or response.status == 429:
                        raise _Retryable(f"HTTP {response.status} {response.reason}", _retry_after(response))
                    if response.status != 200:
                        raise await _rejection(response)
                    async for data in response.content.iter_chunked(READ_CHUNK_BYTES):
                        batch = reader.feed(data)
                        if batch is None:
                            continue
                        for row in batch.rows:
                            this_id = row_id(row)
                            if this_id <= last_id:
                                raise BodyError(f"id {this_id} after id {last_id}: duplicated or out of order row")
                            last_id = this_id
                        received += len(batch.rows)
                        progressed = progressed or bool(batch.rows)
                        yield batch
                    reader.close()
                return
            except (_Retryable, aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, TimeoutError) as exc:
                reason = exc.reason if isinstance(exc, _Retryable) else _describe(exc)
                # An attempt that brought rows starts the count again: only stalls use up the retries.
                failures = 1 if progressed else failures + 1
                if failures > retries:
                    raise GaveUp(failures, received, last_id, reason) from exc
                delay = min(backoff * 2 ** (failures - 1), MAX_BACKOFF_SECONDS)
                if isinstance(exc, _Retryable) and exc.retry_after is not None:
                    delay = max(delay, exc.retry_after)
                event = Retry(failures, retries, delay, reason, received, last_id)
                if on_retry is None:
                    log.warning("%s", event)
                else:
                    on_retry(event)
                await asyncio.sleep(delay)
    finally:
        if own_session:
            await session.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the connection dropped mid-body (incomplete transfer)"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    text = str(exc).split("\n")[0][:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def stream_rows(
    url: str,
    token: str,
    format: str = "ndjson",
    after_id: int = 0,
    *,
    limit: int | None = None,
    page_size: int | None = None,
    retries: int = 5,
    backoff: float = 0.5,
    read_timeout: float = 60.0,
    session: aiohttp.ClientSession | None = None,
    on_retry: Callable[[Retry], None] | None = None,
    compressed: bool = True,
) -> AsyncIterator[Row]:
    """Rows of an export as they arrive: dicts for ndjson/json, lists of strings for csv/text.

    url is the endpoint (".../chunked" or ".../standard"); rows come after `after_id`, at most `limit`
    of them. A dropped connection, a truncated body or a 5xx is retried from the last id yielded,
    waiting backoff, 2*backoff, ... (at most 8 s, or the server's Retry-After), at most `retries`
    times in a row (an attempt that brings rows starts the count again), then GaveUp is raised.
    401 raises Unauthorized, 400 BadRequest, other 4xx RequestRejected, each carrying the server's
    message. Memory stays flat: rows are parsed from each network read and never collected.
    The body travels zstd-compressed (decoded as it arrives) unless `compressed` is False.
    """
    batches = stream_batches(
        url,
        token,
        format,
        after_id,
        limit=limit,
        page_size=page_size,
        retries=retries,
        backoff=backoff,
        read_timeout=read_timeout,
        session=session,
        on_retry=on_retry,
        compressed=compressed,
    )
    # Closing this generator early (a break) closes the request and the session at once.
    async with aclosing(batches):
        async for batch in batches:
            for row in batch.rows:
                yield row
