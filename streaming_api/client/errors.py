"""What the client raises, and what it tells on_retry and on_count: one module every reader shares."""

from __future__ import annotations

import errno
import json
from dataclasses import dataclass
from typing import Any

import aiohttp

# A server's Retry-After is honoured up to this long.
MAX_RETRY_AFTER_SECONDS = 30.0


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


class SnapshotGone(RequestRejected):
    """409: a resume named the snapshot its export read, and the server holds it no longer (its grace period
    passed, or the server restarted). The rows received so far and the rest would be of two moments: the
    export must start again (download() does, into a file it replaces whole)."""


def after_text(key: tuple[str, ...] | None) -> str:
    """The after= that resumes after this key."""
    return "the start" if key is None else "after=" + json.dumps(list(key), ensure_ascii=False)


class GaveUp(StreamError):
    """The connection kept failing: `attempts` in a row failed, none after the first bringing a row.

    `last_key` is where to resume (the values of the last row's key, for after=; None: the start).
    """

    def __init__(self, attempts: int, rows: int, last_key: tuple[str, ...] | None, reason: str) -> None:
        super().__init__(
            f"gave up after {attempts} failed attempts in a row ({reason}); "
            f"{rows:,} rows received (resume with {after_text(last_key)})"
        )
        self.attempts = attempts
        self.rows = rows
        self.last_key = last_key
        self.reason = reason


class NothingListening(GaveUp):
    """The first request's connection was refused: nothing listens at the URL (a server not started, a wrong
    port). Raised at once, not retried: waiting starts no server. (Refused once a server has answered, it is
    retried: that server may be restarting.)"""

    def __init__(self, reason: str, last_key: tuple[str, ...] | None) -> None:
        super().__init__(1, 0, last_key, reason)

    def __str__(self) -> str:
        return f"{self.reason}: connection refused, nothing listens there (is the server running, the URL right?)"


class CannotResume(StreamError):
    """The connection failed after rows arrived, and there is no key to resume after: the table has none
    (a view, say), or the columns asked for leave it out. The client stops rather than guess."""

    def __init__(self, rows: int, reason: str, keyless: bool = False) -> None:
        why = (
            "the table has no key to resume after (a view, or no primary key): run the export again"
            if keyless
            else "the columns asked for leave out the table's key, so there is nothing to resume after "
            "(include the key's columns to resume after drops)"
        )
        super().__init__(f"{reason} after {rows:,} rows, and {why}")
        self.rows = rows
        self.reason = reason


class Retryable(Exception):
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
    last_key: tuple[str, ...] | None

    def __str__(self) -> str:
        where = "from the start" if self.last_key is None else f"after {', '.join(self.last_key)}"
        return (
            f"{self.reason}; {self.rows:,} rows so far: resuming {where} "
            f"in {self.delay:.1f} s (retry {self.attempt} of {self.retries})"
        )


@dataclass(frozen=True)
class RowCount:
    """What on_count is told when a response says how many rows it carries (X-Row-Count, or
    X-Row-Count-Estimate when `exact` is False).

    `rows` is the whole stream's: the rows received before this response (a resumed one asks only for
    the rest) plus the rows the response announces. `received` is that first part.
    """

    rows: int
    exact: bool
    received: int = 0

    def __str__(self) -> str:
        return f"{'' if self.exact else '~'}{self.rows:,}"


def announced_count(headers: Any, received: int) -> RowCount | None:
    """The count a response's headers announce, added to the rows received before it; None without one."""
    for name, exact in (("X-Row-Count", True), ("X-Row-Count-Estimate", False)):
        value = headers.get(name)
        if value is not None:
            try:
                rows = int(value)
            except ValueError:
                return None
            return RowCount(received + rows, exact, received) if rows >= 0 else None
    return None


async def rejection(response: aiohttp.ClientResponse) -> RequestRejected:
    try:
        body = await response.json(content_type=None)
    except (ValueError, aiohttp.ClientError):
        body = None
    if not isinstance(body, dict):
        body = {}
    error = str(body.get("error") or response.reason or "error")
    detail = str(body.get("detail") or f"HTTP {response.status}")
    kind = {401: Unauthorized, 400: BadRequest}.get(response.status, RequestRejected)
    if response.status == 409 and error == "snapshot_gone":
        kind = SnapshotGone
    return kind(response.status, error, detail, body)


def retry_after(response: aiohttp.ClientResponse) -> float | None:
    try:
        return min(float(response.headers["Retry-After"]), MAX_RETRY_AFTER_SECONDS)
    except (KeyError, ValueError):
        return None


def refused(exc: BaseException) -> bool:
    """Whether the connection was refused: the host is there, but nothing listens on the port."""
    return isinstance(exc, aiohttp.ClientConnectorError) and exc.os_error.errno == errno.ECONNREFUSED


def describe(exc: BaseException) -> str:
    if isinstance(exc, Retryable):
        return exc.reason
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
