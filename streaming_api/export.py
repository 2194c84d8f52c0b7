"""An export: which rows, in which format; the pages PostgreSQL renders; the bytes both endpoints send.

Both endpoints run the same `encoded_chunks()`; they part ways only in what they do with each chunk
(handlers.standard collects them into one body, handlers.chunked writes each one as it comes).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import asyncpg
from aiohttp import web
from multidict import MultiMapping

from .db import Statement, page_statement
from .formats import FORMATS, Format, negotiate
from .instrumentation import RequestTiming

MAX_ID = 2**63 - 1


class BadParameter(ValueError):
    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name}: {detail}")
        self.name = name
        self.detail = detail


@dataclass(frozen=True)
class Export:
    format: Format
    after_id: int = 0
    limit: int | None = None
    # Rows per query; None means all of them in one query (/standard).
    page_size: int | None = None


def _int_param(query: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        value = int(raw, 10)
    except ValueError:
        raise BadParameter(name, f"must be an integer, got {raw[:40]!r}") from None
    if not low <= value <= high:
        raise BadParameter(name, f"must be between {low:,} and {high:,}, got {value:,}")
    return value


def parse_export(
    query: MultiMapping[str],
    accept: str | None,
    allowed: set[str],
    default_page_size: int | None,
    max_page_size: int,
) -> Export:
    """Validate the query string; every problem is a BadParameter naming the parameter.

    ?format= wins over the Accept header; only without it is Accept negotiated (NotAcceptable).
    """
    for name in query:
        if name not in allowed:
            raise BadParameter(name, f"unknown parameter; this endpoint accepts {', '.join(sorted(allowed))}")
    for name in set(query):
        if len(query.getall(name)) > 1:
            raise BadParameter(name, "given more than once")
    if "format" in query:
        name = query["format"]
        if name not in FORMATS:
            raise BadParameter("format", f"must be one of {', '.join(FORMATS)}, got {name[:40]!r}")
        fmt = FORMATS[name]
    else:
        fmt = negotiate(accept)
    page_size = _int_param(query, "page_size", 1, max_page_size) if "page_size" in allowed else None
    return Export(
        format=fmt,
        after_id=_int_param(query, "after_id", 0, MAX_ID) or 0,
        limit=_int_param(query, "limit", 0, MAX_ID),
        page_size=page_size or default_page_size,
    )


@dataclass(frozen=True)
class Page:
    rows: int
    last_id: int
    body: bytes
    # True when no rows can follow (short page or limit reached); False when unknown.
    is_last: bool


@dataclass(frozen=True)
class Chunk:
    rows: int
    parts: tuple[bytes, ...]


class PageQueries:
    """The compiled page statement of every format, built once per application."""

    def __init__(self) -> None:
        self._by_format = {name: page_statement(f.line, f.row_separator) for name, f in FORMATS.items()}

    def __getitem__(self, fmt: Format) -> Statement:
        return self._by_format[fmt.name]


async def pages(pool: asyncpg.Pool, queries: PageQueries, export: Export, timing: RequestTiming) -> AsyncIterator[Page]:
    """Keyset pages of rendered rows. A connection is held only while a page is fetched."""
    statement = queries[export.format]
    after_id = export.after_id
    remaining = export.limit
    while remaining is None or remaining > 0:
        size = export.page_size if remaining is None else min(remaining, export.page_size or remaining)
        started = time.perf_counter()
        async with pool.acquire() as conn:
            record = await conn.fetchrow(statement.sql, *statement.args(after_id=after_id, page_size=size))
        timing.db_seconds += time.perf_counter() - started
        rows = record["rows"]
        if rows == 0:
            return
        if remaining is not None:
            remaining -= rows
        is_last = size is None or rows < size or remaining == 0
        yield Page(rows, record["last_id"], record["body"], is_last)
        if is_last:
            return
        after_id = record["last_id"]


async def encoded_chunks(
    pool: asyncpg.Pool, queries: PageQueries, export: Export, timing: RequestTiming
) -> AsyncIterator[Chunk]:
    """The response body, one chunk per page, each chunk as its parts (joined by the sink, once):
    (head, page 1), (separator, page 2), ..., (separator, page n, after_rows, tail).

    The tail rides on the last page when that page is known to be last; otherwise (an exactly
    full last page, or no rows at all) it follows as a small chunk of its own.
    """
    fmt = export.format
    prefix = fmt.head
    separator = fmt.row_separator.encode()
    any_rows = False
    async for page in pages(pool, queries, export, timing):
        any_rows = True
        if page.is_last:
            yield Chunk(page.rows, (prefix, page.body, fmt.after_rows, fmt.tail))
            return
        yield Chunk(page.rows, (prefix, page.body))
        prefix = separator
    # Reached when the rows ran out exactly at a page boundary, or there were none at all.
    yield Chunk(0, (fmt.after_rows, fmt.tail) if any_rows else (fmt.head, fmt.tail))


QUERIES = web.AppKey("page_queries", PageQueries)
