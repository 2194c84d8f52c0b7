"""A Python consumer of /chunked and /standard: rows as they arrive, resuming after dropped connections.

    async for row in stream_rows("http://127.0.0.1:8080/chunked", token, format="csv"):
        ...

A dropped connection or an incomplete body is retried with backoff after the last row received (by
the table's key, `after=`), so every row arrives exactly once, in key order. 401 and 400 raise at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import aiohttp

from .errors import Retry, Retryable, RowCount
from .records import FORMATS, BodyError, RecordSplitter, Row, RowParser, key_values
from .resume import Key, Options, after_argument, columns_argument, resumable

# The client's formats: the server's text formats, and Arrow (which needs pyarrow).
ARROW = "arrow"
PYARROW_MISSING = "format='arrow' needs pyarrow: pip install 'streaming_api[arrow]'"


def load_arrow() -> ModuleType:
    """client.arrow, imported on first use: pyarrow is optional, loaded only for the format that needs it."""
    try:
        from . import arrow
    except ImportError as exc:
        raise ImportError(PYARROW_MISSING) from exc
    return arrow


__all__ = [
    "ARROW",
    "PYARROW_MISSING",
    "Batch",
    "load_arrow",
    "stream_batches",
    "stream_rows",
]


@dataclass(frozen=True)
class Batch:
    """Rows that arrived together, each with its exact bytes as the server wrote them.

    `head` is set on the first batch of each response: the bytes before the first record
    (the CSV header line, the JSON "[", nothing for NDJSON).
    """

    rows: list[Row]
    records: list[bytes]
    head: bytes | None = None


class _TextDecoder:
    """The rows and records of one text response, as they arrive."""

    def __init__(self, fmt: str, key: Key | None, columns: tuple[str, ...] | None) -> None:
        self._format = fmt
        self._splitter = RecordSplitter(fmt)
        self._parser = RowParser(fmt, columns)
        self._head_sent = False
        self._key = key
        self._last_record: bytes | None = None
        # A key of one integer column must go up from batch to batch (a row sent twice after a resume, or
        # out of order, is a BodyError); checked at each batch's ends, not per row.
        self._last_id: int | None = None

    def feed(self, data: bytes) -> list[Batch]:
        consumed, records = self._splitter.feed(data)
        rows = self._parser.feed(consumed) if consumed else []
        if len(rows) != len(records):
            raise BodyError(f"{len(rows)} rows parsed from {len(records)} records: unexpected body layout")
        if records:
            self._last_record = records[-1]
        head = None
        if not self._head_sent and self._splitter.head is not None:
            head, self._head_sent = self._splitter.head, True
        if head is None and not rows:
            return []
        return [Batch(rows, records, head)]

    def close(self) -> None:
        if self._splitter.pending:
            raise Retryable("the body ended inside a record (incomplete transfer)")
        try:
            self._parser.close()
        except BodyError as exc:
            raise Retryable(f"incomplete body: {exc}") from None

    def advance(self, batch: Batch) -> int:
        if self._key is not None and len(self._key) == 1 and batch.rows:
            first, last = self._integer(batch.rows[0]), self._integer(batch.rows[-1])
            if first is not None and last is not None:
                if (self._last_id is not None and first <= self._last_id) or last < first:
                    raise BodyError(f"id {first} after id {self._last_id}: duplicated or out of order rows")
                self._last_id = last
        return len(batch.rows)

    def _integer(self, row: Row) -> int | None:
        """The row's key as an int, if it is one (else the key is not checked)."""
        assert self._key is not None
        name = self._key[0]
        if isinstance(row, dict):
            value = row.get(name)
        else:
            columns = self._parser.columns or ()
            value = row[columns.index(name)] if name in columns else None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lstrip("-").isdigit():
            return int(value)
        return None

    def last_key(self) -> Key | None:
        if self._key is None or self._last_record is None:
            return None
        return key_values(self._format, self._last_record, self._key, self._parser.columns)


async def stream_batches(
    url: str,
    token: str,
    format: str = "ndjson",
    after_id: int | None = None,
    *,
    after: Any = None,
    limit: int | None = None,
    page_size: int | None = None,
    columns: Sequence[str] | str | None = None,
    retries: int = 5,
    backoff: float = 0.5,
    read_timeout: float = 60.0,
    session: aiohttp.ClientSession | None = None,
    on_retry: Callable[[Retry], None] | None = None,
    on_count: Callable[[RowCount], None] | None = None,
    compressed: bool = True,
) -> AsyncIterator[Batch]:
    """Batches of rows with their exact bytes, resuming after drops; see stream_rows for the arguments.

    Text formats only (format="arrow": stream_record_batches in streaming_api.client.arrow)."""
    if format not in FORMATS:
        hint = "; for Arrow use stream_rows or stream_record_batches" if format == ARROW else ""
        raise ValueError(f"unknown format {format!r}; one of {', '.join(FORMATS)}{hint}")
    names = columns_argument(columns)
    options = Options(
        url,
        token,
        format,
        after_argument(after, after_id),
        limit=limit,
        page_size=page_size,
        columns=names,
        retries=retries,
        backoff=backoff,
        read_timeout=read_timeout,
        session=session,
        on_retry=on_retry,
        on_count=on_count,
        compressed=compressed,
    )
    batches = resumable(options, lambda key: _TextDecoder(format, key, names))
    async with aclosing(batches):
        async for batch in batches:
            yield batch


async def stream_rows(
    url: str,
    token: str,
    format: str = "ndjson",
    after_id: int | None = None,
    *,
    after: Any = None,
    limit: int | None = None,
    page_size: int | None = None,
    columns: Sequence[str] | str | None = None,
    retries: int = 5,
    backoff: float = 0.5,
    read_timeout: float = 60.0,
    session: aiohttp.ClientSession | None = None,
    on_retry: Callable[[Retry], None] | None = None,
    on_count: Callable[[RowCount], None] | None = None,
    compressed: bool = True,
    as_rows: bool = False,
) -> AsyncIterator[Any]:
    """Rows of an export as they arrive: dicts for ndjson/json, lists of strings for csv/text.

    url is the endpoint and table (".../chunked/orders", ".../standard/sales.orders", ".../chunked" for
    the default table); rows come after the key `after` (its value, or a list of values for a key of
    several columns; `after_id` for an integer key), at most `limit` of them, with the `columns` named
    (a list, or "x,y,id"; every column by default). A dropped connection, a truncated body or a 5xx is
    retried after the last row yielded (by the key the response names in X-Key), waiting backoff,
    2*backoff, ... (at most 8 s, or the server's Retry-After), at most `retries` times in a row (an
    attempt that brings rows starts the count again), then GaveUp is raised; a connection refused before
    any server answered raises NothingListening (a GaveUp) at once. Resuming needs the key: for a table
    without one (a view), or with `columns` that leave it out, a failure after rows arrived raises
    CannotResume (one before the first row is retried as usual). Every row is of one moment: a resume
    continues in the snapshot the export read (the response's X-Snapshot), and raises SnapshotGone when
    the server no longer holds it (its grace period passed, the server restarted); the rows yielded so far
    are then of another moment than the rest would be, so run the export again. 401 raises Unauthorized,
    400 BadRequest, other 4xx RequestRejected, each carrying the server's message. Memory stays flat: rows
    are parsed from each network read and never collected. The body travels zstd-compressed (decoded as
    it arrives) unless `compressed` is False.

    format="arrow" (needs pyarrow) yields pyarrow.RecordBatch objects, one per page, or with
    as_rows=True one dict per row with typed values (int, float, str, datetime).

    on_count(RowCount) is called when a response says how many rows it carries (exact, or an estimate):
    `rows` counts the whole stream, so after a resume it is the rows already received plus the rest.
    """
    common: dict[str, Any] = {
        "after": after,
        "limit": limit,
        "page_size": page_size,
        "columns": columns,
        "retries": retries,
        "backoff": backoff,
        "read_timeout": read_timeout,
        "session": session,
        "on_retry": on_retry,
        "on_count": on_count,
        "compressed": compressed,
    }
    if format == ARROW:
        record_batches = load_arrow().stream_record_batches(url, token, after_id, **common)
        async with aclosing(record_batches):
            async for record_batch in record_batches:
                if as_rows:
                    for row in record_batch.to_pylist():
                        yield row
                else:
                    yield record_batch
        return
    batches = stream_batches(url, token, format, after_id, **common)
    # Closing this generator early (a break) closes the request and the session at once.
    async with aclosing(batches):
        async for batch in batches:
            for row in batch.rows:
                yield row
