"""Log filters `run.py serve` installs: one line instead of a traceback where the traceback is only noise,
or where its message would quote request bytes (which may hold a token)."""

from __future__ import annotations

import logging

import asyncpg
from aiohttp.http_exceptions import HttpProcessingError

from .middleware.timing import redact_text


def _one_line(record: logging.LogRecord, reason: str) -> None:
    record.msg = f"{record.getMessage()}: {reason}"
    record.args = None
    record.exc_info = None
    record.exc_text = None


class TracebackToOneLine(logging.Filter):
    """asyncpg's pool logs every failed reconnect during an outage with a traceback: keep one line and the reason."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            _one_line(record, f"{type(exc).__name__}: {exc}")
        return True


class UnparsableRequestToOneLine(logging.Filter):
    """aiohttp logs a request it cannot parse (a header line too long...) with a traceback whose message
    quotes the offending bytes: keep one warning with the status and the kind of problem, not the bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            _one_line(record, f"{exc.code} {type(exc).__name__}")
            # The client sent something malformed: not an error of the server's.
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class LostConnectionFutureToOneLine(logging.Filter):
    """When the database goes away mid-query, asyncpg can leave an internal future holding the
    "connection closed" error that nobody awaits, and asyncio reports it as an ERROR with a traceback.
    The request it belonged to has already logged its own error line: keep one warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, asyncpg.PostgresConnectionError | asyncpg.InterfaceError) and "never retrieved" in str(
            record.msg
        ):
            _one_line(record, f"{type(exc).__name__}: {exc}")
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class RedactCredentials(logging.Filter):
    """A log line that quotes a request target (aiohttp's own access log, where a runner turns it on) keeps
    no credential: a ?token=... or any other credential-looking parameter, and any JWT, become [redacted]."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


# aiohttp's loggers that may quote a request's target.
REQUEST_LOGGERS = ("aiohttp.access", "aiohttp.server", "aiohttp.web")


def redact_credentials() -> None:
    """Add RedactCredentials to aiohttp's loggers once (create_app calls this: every runner of the app gets it)."""
    for name in REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactCredentials) for f in logger.filters):
            logger.addFilter(RedactCredentials())


FILTERS: tuple[tuple[str, type[logging.Filter]], ...] = (
    ("asyncpg.pool", TracebackToOneLine),
    ("aiohttp.server", UnparsableRequestToOneLine),
    ("asyncio", LostConnectionFutureToOneLine),
)


def install() -> None:
    """Add each filter to its logger once (calling this again adds nothing)."""
    for name, kind in FILTERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, kind) for f in logger.filters):
            logger.addFilter(kind())
