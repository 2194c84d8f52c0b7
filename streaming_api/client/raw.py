"""A text export's bytes as they come, cut at record boundaries and never parsed: what `fetch` writes.

A download writes the server's bytes as they are, and resuming needs only the last whole record's key,
so nothing here reads a field but that record's, and only when a resume needs it. Records are found with
byte operations that run in C: NDJSON and JSON end each record with a newline (JSON strings escape
theirs); CSV ends one at a newline outside double quotes (in the even pieces of a split on `"`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, BinaryIO

import aiohttp

from .errors import Retry, Retryable, RowCount
from .records import FORMATS, BodyError, key_values
from .resume import Key, Options, after_argument, columns_argument, resumable


@dataclass(frozen=True)
class Block:
    """Whole records as received, their separators included, and how many; the first response's head
    (CSV's header, JSON's "[") rides on its first block, a resumed response's is left out."""

    data: bytes
    rows: int


def _records_end(data: bytes) -> tuple[int, int]:
    """Where the last whole CSV record of `data` ends, and how many end there: `data` begins at a record's
    start, so a newline ends a record where the double quotes before it are even."""
    end = rows = offset = 0
    for index, piece in enumerate(data.split(b'"')):
        if index % 2 == 0 and (count := piece.count(b"\n")):
            rows += count
            end = offset + piece.rfind(b"\n") + 1
        offset += len(piece) + 1
    return end, rows


def _first_record_end(data: bytes) -> int:
    """Where the first whole CSV record of `data` ends (0: not whole yet)."""
    offset = 0
    for index, piece in enumerate(data.split(b'"')):
        if index % 2 == 0 and (newline := piece.find(b"\n")) >= 0:
            return offset + newline + 1
        offset += len(piece) + 1
    return 0


class RawDecoder:
    """One response's text body as blocks of whole records."""

    def __init__(self, fmt: str, key: Key | None, resumed: bool) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
        self._csv = fmt in ("csv", "text")
        self._format = fmt
        self._key = key
        self._resumed = resumed
        self._pending = b""
        self._head_due = fmt != "ndjson"
        self._last = b""
        self.columns: tuple[str, ...] | None = None

    def feed(self, data: bytes) -> list[Block]:
        buffer = self._pending + data if self._pending else data
        head = b""
        if self._head_due:
            cut = _first_record_end(buffer) if self._csv else min(len(buffer), 1)
            if not cut:
                self._pending = buffer
                return []
            head, buffer = buffer[:cut], buffer[cut:]
            self._head_due = False
            if self._csv:
                self.columns = tuple(next(csv.reader(io.StringIO(head.decode("utf-8"), newline=""))))
            elif head != b"[":
                raise BodyError("JSON body does not start with '['")
            if self._resumed:
                head = b""
        if self._csv:
            end, rows = _records_end(buffer)
        else:
            end = buffer.rfind(b"\n") + 1
            rows = buffer.count(b"\n", 0, end) - (1 if buffer.startswith(b"]") else 0)  # "[]": no record
        records, self._pending = buffer[:end], buffer[end:]
        if rows:
            self._last = records
        return [Block(head + records, rows)] if head or records else []

    def close(self) -> None:
        if self._pending or self._head_due:
            raise Retryable("the body ended inside a record (incomplete transfer)")

    def advance(self, block: Block) -> int:
        return block.rows

    def last_key(self) -> Key | None:
        if self._key is None or not self._last:
            return None
        return key_values(self._format, self._last_record(), self._key, self.columns)

    def _last_record(self) -> bytes:
        body = self._last[:-1]  # without the newline that ends it
        if self._csv:
            return body[_records_end(body)[0] :]
        line = body[body.rfind(b"\n") + 1 :]
        return line.removeprefix(b"[").removesuffix(b",").removesuffix(b"]") if self._format == "json" else line


async def raw_blocks(
    url: str,
    token: str,
    fmt: str,
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
) -> AsyncIterator[Block]:
    """The export's bytes in blocks of whole records, resuming after drops; see stream_rows."""
    options = Options(
        url,
        token,
        fmt,
        after_argument(after, after_id),
        limit=limit,
        page_size=page_size,
        columns=columns_argument(columns),
        retries=retries,
        backoff=backoff,
        read_timeout=read_timeout,
        session=session,
        on_retry=on_retry,
        on_count=on_count,
        compressed=compressed,
    )
    responses = 0

    def new_decoder(key: Key | None) -> RawDecoder:
        nonlocal responses
        responses += 1
        return RawDecoder(fmt, key, resumed=responses > 1)

    blocks = resumable(options, new_decoder)
    async with aclosing(blocks):
        async for block in blocks:
            yield block


class RawWriter:
    """Writes the blocks as they are: the bytes of an uninterrupted download, whatever the resumes. JSON
    holds back each block's last separator (",\\n", or "]\\n" at the end) until more records follow, and
    closes the array once: a resume that finds no rows left still leaves a valid array."""

    def __init__(self, fmt: str, sink: BinaryIO) -> None:
        self._sink = sink
        self._json = fmt == "json"
        self._owed = b""
        self._started = False
        self.bytes_written = 0

    def write(self, block: Block) -> None:
        data = block.data
        self._started = True
        if self._json:
            if data.endswith((b",\n", b"]\n")):
                data, owed = data[:-2], data.endswith(b",\n")
            else:
                owed = False
            if not data:
                return
            data, self._owed = self._owed + data, b",\n" if owed else b""
        self._write(data)

    def finish(self) -> None:
        if not self._started:
            raise BodyError("no response reached its first record or header")
        if self._json:
            self._write(b"]\n")

    def _write(self, data: bytes) -> None:
        self._sink.write(data)
        self.bytes_written += len(data)
