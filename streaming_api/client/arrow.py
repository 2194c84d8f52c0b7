"""format=arrow in the client: record batches as their last byte arrives, resuming after drops (needs pyarrow).

    table = await read_table("http://127.0.0.1:8080/chunked", token)
    async for batch in stream_record_batches(url, token):   # pyarrow.RecordBatch, one per page
        ...

The body is an Arrow IPC stream: the schema message, one record batch per page, the end-of-stream
marker. pyarrow decodes only from a whole source, so this reads the framing itself (the continuation
marker, the metadata's length, the flatbuffer Message's bodyLength) and hands pyarrow each message once
all its bytes are in. A stream that ends without the marker was cut short: it is resumed after the last
whole batch's last row (by the table's key), and the new response's schema message is checked against
the first and skipped, so the batches read as one stream.
"""

from __future__ import annotations

import datetime as dt
import struct
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, BinaryIO

import aiohttp
import numpy as np
import pyarrow as pa
import pyarrow.ipc

from .errors import Retry, Retryable, RowCount, SnapshotGone
from .records import BodyError
from .resume import Key, Options, after_argument, columns_argument, resumable

CONTINUATION = b"\xff\xff\xff\xff"
END_OF_STREAM = CONTINUATION + b"\x00\x00\x00\x00"
# The flatbuffer Message table's bodyLength: field 3 (version, header_type, header, bodyLength...).
_BODY_LENGTH_SLOT = 4 + 2 * 3


def message_body_length(metadata: memoryview) -> int:
    """bodyLength (an int64) of a serialized flatbuffer org.apache.arrow.flatbuf.Message."""
    try:
        table = struct.unpack_from("<I", metadata, 0)[0]
        vtable = table - struct.unpack_from("<i", metadata, table)[0]
        vtable_size = struct.unpack_from("<H", metadata, vtable)[0]
        if vtable_size < _BODY_LENGTH_SLOT + 2:
            return 0  # the field is absent: no body
        field = struct.unpack_from("<H", metadata, vtable + _BODY_LENGTH_SLOT)[0]
        length = 0 if field == 0 else struct.unpack_from("<q", metadata, table + field)[0]
    except struct.error:
        raise BodyError("corrupt Arrow IPC message metadata") from None
    if length < 0:
        raise BodyError("corrupt Arrow IPC message (negative body length)")
    return length


@dataclass(frozen=True)
class Message:
    """One IPC message as received: the schema (batch None) or a record batch, and its exact bytes."""

    schema: pa.Schema
    batch: pa.RecordBatch | None
    data: bytes


class StreamDecoder:
    """One response's IPC stream, decoded as it arrives. `schemas` holds the first response's schema:
    a resumed response's must equal it, and is not handed on again."""

    def __init__(self, schemas: list[pa.Schema], key: Key | None = None) -> None:
        self._schemas = schemas
        self._schema: pa.Schema | None = None
        # What has arrived of the messages not yet whole, as it arrived (joined once, when a message is whole).
        self._pending: deque[bytes | memoryview] = deque()
        self._pending_bytes = 0
        # The length of the message being received, once its metadata is in (None: not known yet).
        self._message_bytes: int | None = None
        self._finished = False
        self._key = key
        self._last_batch: pa.RecordBatch | None = None
        self._last_id: int | None = None

    def feed(self, data: bytes) -> list[Message]:
        if self._finished:
            if data:
                raise BodyError("bytes after the Arrow end-of-stream marker")
            return []
        if data:
            self._pending.append(data)
            self._pending_bytes += len(data)
        messages: list[Message] = []
        while not self._finished:
            if self._message_bytes is None and not self._measure():
                break
            assert self._message_bytes is not None
            if self._pending_bytes < self._message_bytes:
                break
            message = self._message(self._take(self._message_bytes))
            self._message_bytes = None
            if message is not None:
                messages.append(message)
        return messages

    def _measure(self) -> bool:
        """Read the next message's length from its prefix and metadata, once they are in (False: not yet)."""
        if self._pending_bytes < 8:
            return False
        prefix = self._peek(8)
        if prefix[:4] != CONTINUATION:
            raise BodyError("not an Arrow IPC stream (no continuation marker)")
        metadata_length = struct.unpack_from("<i", prefix, 4)[0]
        if metadata_length == 0:
            self._finished = True
            if self._pending_bytes > 8:
                raise BodyError("bytes after the Arrow end-of-stream marker")
            self._take(8)
            return False
        if metadata_length < 0:
            raise BodyError("corrupt Arrow IPC stream (negative metadata length)")
        if self._pending_bytes < 8 + metadata_length:
            return False
        metadata = memoryview(self._peek(8 + metadata_length))[8:]
        self._message_bytes = 8 + metadata_length + message_body_length(metadata)
        return True

    def _peek(self, size: int) -> bytes | memoryview:
        """The first `size` bytes pending (a view of the first piece when it holds them: no copy)."""
        first = self._pending[0]
        if len(first) >= size:
            return memoryview(first)[:size]
        parts, needed = [], size
        for piece in self._pending:
            parts.append(memoryview(piece)[:needed])
            needed -= len(parts[-1])
            if not needed:
                break
        return b"".join(parts)

    def _take(self, size: int) -> bytes:
        """The first `size` bytes pending, as bytes of their own: one copy of each message (a piece that is
        exactly one message is taken as it is). A message's bytes start 8-aligned, as pyarrow wants them."""
        self._pending_bytes -= size
        first = self._pending[0]
        if len(first) == size and isinstance(first, bytes):
            return self._pending.popleft()  # type: ignore[return-value]
        parts = []
        while size:
            piece = self._pending.popleft()
            if len(piece) > size:
                rest = memoryview(piece)
                parts.append(rest[:size])
                self._pending.appendleft(rest[size:])
                break
            parts.append(piece)
            size -= len(piece)
        return b"".join(parts)

    def _message(self, data: bytes) -> Message | None:
        try:
            message = pa.ipc.read_message(pa.py_buffer(data))
            if message.type == "schema":
                return self._schema_message(pa.ipc.read_schema(message), data)
            if message.type != "record batch":
                raise BodyError(f"unexpected Arrow IPC message {message.type!r}")
            if self._schema is None:
                raise BodyError("an Arrow record batch before the schema")
            return Message(self._schema, pa.ipc.read_record_batch(message, self._schema), data)
        except pa.ArrowException as exc:
            raise BodyError(f"malformed Arrow IPC message: {exc}") from None

    def _schema_message(self, schema: pa.Schema, data: bytes) -> Message | None:
        if self._schema is not None:
            raise BodyError("a second schema in one Arrow stream")
        self._schema = schema
        if not self._schemas:
            self._schemas.append(schema)
            return Message(schema, None, data)
        if not schema.equals(self._schemas[0]):
            raise BodyError(f"the resumed response's schema differs: {schema} after {self._schemas[0]}")
        return None  # a resumed response: its batches carry on the first stream

    def close(self) -> None:
        if not self._finished:
            raise Retryable("the Arrow stream ended before its end-of-stream marker (incomplete transfer)")

    def advance(self, message: Message) -> int:
        batch = message.batch
        if batch is None or batch.num_rows == 0:
            return 0
        self._last_batch = batch
        index = -1 if self._key is None or len(self._key) != 1 else batch.schema.get_field_index(self._key[0])
        if index >= 0 and pa.types.is_integer(batch.schema.field(index).type) and batch.column(index).null_count == 0:
            # A key of one integer column must go up: a row sent twice after a resume is a BodyError.
            ids = batch.column(index).to_numpy()
            after = self._last_id
            if (after is not None and ids[0] <= after) or (ids.size > 1 and not bool(np.all(ids[1:] > ids[:-1]))):
                raise BodyError(f"ids {ids[0]}..{ids[-1]} after id {after}: duplicated or out of order rows")
            self._last_id = int(ids[-1])
        return batch.num_rows

    def last_key(self) -> Key | None:
        batch = self._last_batch
        if self._key is None or batch is None:
            return None
        try:
            return tuple(key_text(batch.column(name)[batch.num_rows - 1].as_py()) for name in self._key)
        except KeyError:
            raise BodyError(f"a batch without its key ({', '.join(self._key)})") from None


class ArrowStreamWriter:
    """An .arrow stream file from arrow_messages: every message as received (the decoder already saw to one
    schema, first), then the end-of-stream marker."""

    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink
        self.bytes_written = 0

    def write(self, message: Message) -> None:
        self._write(message.data)

    def finish(self) -> None:
        if not self.bytes_written:
            raise BodyError("no response reached its schema")
        self._write(END_OF_STREAM)

    def _write(self, data: bytes) -> None:
        self._sink.write(data)
        self.bytes_written += len(data)


def key_text(value: Any) -> str:
    """An Arrow value as text PostgreSQL reads back as the same key value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bytes):
        return "\\x" + value.hex()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, int | str | Decimal):
        return str(value)
    raise BodyError(f"cannot resume after a key value of type {type(value).__name__}")


async def arrow_messages(
    url: str,
    token: str,
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
) -> AsyncIterator[Message]:
    """The schema message once, then every record batch's message, across resumes (one valid stream
    once END_OF_STREAM follows them); see stream_rows for the arguments."""
    options = Options(
        url,
        token,
        "arrow",
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
    schemas: list[pa.Schema] = []
    messages = resumable(options, lambda key: StreamDecoder(schemas, key))
    async with aclosing(messages):
        async for message in messages:
            yield message


async def stream_record_batches(
    url: str, token: str, after_id: int | None = None, **options: object
) -> AsyncIterator[pa.RecordBatch]:
    """pyarrow.RecordBatch objects as each arrives (one per page), resuming after drops; the arguments
    are stream_rows's (limit, page_size, columns, retries, on_count...)."""
    messages = arrow_messages(url, token, after_id, **options)  # type: ignore[arg-type]
    async with aclosing(messages):
        async for message in messages:
            if message.batch is not None:
                yield message.batch


async def read_table(url: str, token: str, after_id: int | None = None, **options: object) -> pa.Table:
    """The whole export as one pyarrow.Table, equal to an uninterrupted download's whatever the drops
    (resumed as stream_rows does); the arguments are stream_rows's. A resume whose snapshot the server no
    longer holds starts the export again (the table is built only once the whole of one moment is in)."""
    retries = int(options.get("retries", Options.retries))  # type: ignore[call-overload]
    on_retry = options.get("on_retry")
    restarts = 0
    while True:
        schema: pa.Schema | None = None
        batches: list[pa.RecordBatch] = []
        messages = arrow_messages(url, token, after_id, **options)  # type: ignore[arg-type]
        try:
            async with aclosing(messages):
                async for message in messages:
                    schema = message.schema
                    if message.batch is not None:
                        batches.append(message.batch)
        except SnapshotGone as exc:
            restarts += 1
            if restarts > retries:
                raise
            if callable(on_retry):
                on_retry(Retry(restarts, retries, 0.0, f"the export's snapshot is gone ({exc.error})", 0, None))
            continue
        if schema is None:
            raise BodyError("no response reached its schema")
        return pa.Table.from_batches(batches, schema=schema)
