"""A body's rows as its bytes arrive, whatever its format and table: feed bytes, get one entry per row they
completed (the row's value of `key`, a column of integers, or None when no key is read); close() says
whether the body was whole (BodyError if not)."""

from __future__ import annotations

import csv
from typing import Protocol

from ..client.records import BodyError, Row, RowParser


class IdReader(Protocol):
    def feed(self, data: bytes) -> list[int | None]: ...

    def close(self) -> list[int | None]: ...


def _integer(value: object, key: str) -> int:
    # bool is an int to Python, and a float would be truncated: neither is a key of integers.
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise BodyError(f"a row whose {key} is not an integer: {str(value)[:80]}")
    try:
        return int(value)
    except ValueError:
        raise BodyError(f"a row whose {key} is not an integer: {str(value)[:80]}") from None


class _TextIds:
    """ndjson, json, csv, text: the client's own parser (the CSV header says where the key is)."""

    def __init__(self, fmt: str, key: str | None) -> None:
        self._parser = RowParser(fmt)
        self._key = key
        self._position: int | None = None

    def _values(self, rows: list[Row]) -> list[int | None]:
        key = self._key
        if key is None:
            return [None] * len(rows)
        if rows and isinstance(rows[0], list) and self._position is None:
            columns = self._parser.columns or ()
            if key not in columns:
                raise BodyError(f"the CSV header has no {key} column: {list(columns)[:20]}")
            self._position = columns.index(key)
        try:
            return [_integer(row[key] if isinstance(row, dict) else row[self._position or 0], key) for row in rows]
        except KeyError:
            raise BodyError(f"a row without its {key}") from None

    def feed(self, data: bytes) -> list[int | None]:
        try:
            return self._values(self._parser.feed(data))
        except csv.Error as exc:  # a malformed body is a failed verification, not the bench's crash
            raise BodyError(f"CSV: {exc}") from None

    def close(self) -> list[int | None]:
        try:
            return self._values(self._parser.close())
        except csv.Error as exc:
            raise BodyError(f"CSV: {exc}") from None


class _ArrowIds:
    """An Arrow IPC stream: a batch's rows are complete with its last byte (the client's decoder)."""

    def __init__(self, key: str | None) -> None:
        from ..client.arrow import StreamDecoder  # pyarrow: loaded only when Arrow is benchmarked

        self._decoder = StreamDecoder([])
        self._key = key

    def feed(self, data: bytes) -> list[int | None]:
        values: list[int | None] = []
        for message in self._decoder.feed(data):
            batch = message.batch
            if batch is None or not batch.num_rows:
                continue
            if self._key is None:
                values.extend([None] * batch.num_rows)
            elif self._key not in batch.schema.names:
                raise BodyError(f"the Arrow schema has no {self._key} column: {batch.schema.names[:20]}")
            else:
                values.extend(batch.column(self._key).to_pylist())
        return values

    def close(self) -> list[int | None]:
        try:
            self._decoder.close()
        except Exception as exc:  # the decoder says "incomplete" as a retryable error: here a bad body
            raise BodyError(str(exc)) from None
        return []


def id_reader(fmt: str, key: str | None = None) -> IdReader:
    """Rows with their value of `key` (a column of integers), or None each when `key` is None."""
    return _ArrowIds(key) if fmt == "arrow" else _TextIds(fmt, key)
