"""Reading the service's bodies back: rows as they arrive (RowParser), the exact bytes of each record
(RecordSplitter), a record's key as the server reads it back (key_values), and checking that ids run on
with none missing (verify_ids).

The columns come from the body itself (the CSV header, each JSON object's keys): any table's export
reads back the same way. Shared by the Python client, the benchmark and the tests (is a body whole?).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Iterable
from typing import Any

# The formats whose bodies these parse (the server's names for them).
FORMATS = ("ndjson", "csv", "json", "text")
# A field as long as a value may be (a text of 2 MB, or up to PostgreSQL's 1 GB), not csv's 128 KiB.
csv.field_size_limit(2**31 - 1)
Row = dict[str, Any] | list[str]


class BodyError(ValueError):
    """The body is malformed or incomplete (truncated line, unclosed array, missing header...)."""


class RowParser:
    """Feed bytes as they arrive; get complete rows back. close() says whether the body was whole.

    ndjson and json give dicts; csv and text give lists of strings (the header is read, not returned:
    `columns` holds it). With `columns` given, the CSV header must be exactly those.
    """

    def __init__(self, fmt: str, columns: tuple[str, ...] | None = None) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
        self.format = fmt
        self._expected = None if columns is None else tuple(columns)
        self.columns: tuple[str, ...] | None = self._expected
        self._bytes = b""
        self._text = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")()
        self._json = json.JSONDecoder()
        # json: "open" before "[", "first" right after it, then "value" / "comma", "done" after "]".
        self._json_state = "open"
        self._header_seen = False

    def feed(self, data: bytes) -> list[Row]:
        if self.format == "ndjson":
            return self._feed_ndjson(data)
        try:
            self._text += self._decoder.decode(data)
        except UnicodeDecodeError as exc:
            raise BodyError(f"invalid UTF-8: {exc}") from None
        return self._feed_json() if self.format == "json" else self._feed_csv()

    def close(self) -> list[Row]:
        """Rows still buffered; BodyError if the body ended early or is malformed."""
        if self.format == "ndjson":
            if self._bytes:
                raise BodyError("truncated last line (no newline at the end)")
            return []
        try:
            self._text += self._decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise BodyError(f"body ends inside a UTF-8 sequence: {exc}") from None
        if self.format == "json":
            rows = self._feed_json()
            if self._json_state != "done":
                raise BodyError("JSON array is not closed")
            if self._text.strip():
                raise BodyError("data after the end of the JSON array")
            return rows
        rows = self._feed_csv()
        if self._text:
            raise BodyError("truncated last CSV record (no newline at the end)")
        if not self._header_seen:
            raise BodyError("CSV header missing")
        return rows

    def _feed_ndjson(self, data: bytes) -> list[Row]:
        self._bytes += data
        *lines, self._bytes = self._bytes.split(b"\n")
        try:
            rows = [json.loads(line) for line in lines]
        except ValueError as exc:
            raise BodyError(f"bad NDJSON line: {exc}") from None
        if any(not isinstance(r, dict) for r in rows):
            raise BodyError("NDJSON line is not an object")
        return rows

    def _feed_json(self) -> list[Row]:
        text, pos, rows = self._text, 0, []
        while True:
            while pos < len(text) and text[pos] in " \t\r\n":
                pos += 1
            if pos == len(text) or self._json_state == "done":
                break
            char = text[pos]
            if self._json_state == "open":
                if char != "[":
                    raise BodyError("JSON body does not start with '['")
                self._json_state, pos = "first", pos + 1
            elif self._json_state in ("comma", "first") and char == "]":
                self._json_state, pos = "done", pos + 1
            elif self._json_state == "comma" and char == ",":
                self._json_state, pos = "value", pos + 1
            elif self._json_state in ("value", "first"):
                try:
                    value, end = self._json.raw_decode(text, pos)
                except json.JSONDecodeError:
                    if char != "{":
                        raise BodyError("JSON array holds something other than objects") from None
                    break  # an object not complete yet: wait for more bytes
                if not isinstance(value, dict):
                    raise BodyError("JSON array holds something other than objects")
                rows.append(value)
                self._json_state, pos = "comma", end
            else:
                raise BodyError(f"unexpected {char!r} in JSON array")
        self._text = text[pos:]
        return rows

    def _feed_csv(self) -> list[Row]:
        text = self._text
        # A record ends at a newline outside quotes: where the count of '"' so far is even.
        end, quotes, search = 0, 0, 0
        while True:
            newline = text.find("\n", search)
            if newline < 0:
                break
            quotes += text.count('"', search, newline)
            search = newline + 1
            if quotes % 2 == 0:
                end = search
        if end == 0:
            return []
        self._text = text[end:]
        records = list(csv.reader(io.StringIO(text[:end], newline="")))
        if not self._header_seen:
            header, records = tuple(records[0]), records[1:]
            if self._expected is not None and header != self._expected:
                raise BodyError(f"unexpected CSV header {list(header)!r}")
            self.columns = header
            self._header_seen = True
        assert self.columns is not None
        width = len(self.columns)
        for record in records:
            if len(record) != width:
                raise BodyError(f"CSV record with {len(record)} fields, expected {width}: {str(record)[:80]}")
        return records


def row_id(row: Row, position: int = 0) -> int:
    """A row's id: its "id" key, or for a CSV record its field at `position` (where columns= put the id)."""
    try:
        return int(row["id"] if isinstance(row, dict) else row[position])
    except (KeyError, IndexError, TypeError, ValueError):
        raise BodyError(f"row without a valid id: {str(row)[:80]}") from None


def key_values(fmt: str, record: bytes, key: tuple[str, ...], columns: tuple[str, ...] | None) -> tuple[str, ...]:
    """A record's key, each value as text the server reads back as the same value (its exact digits for
    a number: a float would round a numeric's); BodyError if the record does not carry the key."""
    try:
        if fmt in ("ndjson", "json"):
            row = json.loads(record, parse_float=str, parse_int=str)
            return tuple(_key_text(row[name]) for name in key)
        assert columns is not None
        fields = next(csv.reader(io.StringIO(record.decode("utf-8"), newline="")))
        return tuple(fields[columns.index(name)] for name in key)
    except (KeyError, ValueError, IndexError, StopIteration) as exc:
        raise BodyError(f"a record without its key ({', '.join(key)}): {exc}") from None


def _key_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if not isinstance(value, str):
        raise ValueError(f"a key value that is {type(value).__name__}")
    return value


def verify_ids(ids: Iterable[int], expected_rows: int | None, after_id: int = 0) -> int:
    """Check ids run after_id+1, after_id+2, ... with no gap or repeat, and the count; return the count."""
    count = 0
    expected = after_id + 1
    for row_id_ in ids:
        if row_id_ != expected:
            what = "duplicated or out of order" if row_id_ < expected else "missing"
            raise BodyError(f"row {count + 1}: id {row_id_}, expected {expected} ({what} row)")
        expected += 1
        count += 1
    if expected_rows is not None and count != expected_rows:
        raise BodyError(f"{count} rows, expected {expected_rows}")
    return count


# One CSV record: fields without quotes or quoted (a quoted field may hold newlines and doubled quotes).
_CSV_RECORD = re.compile(rb'[^"\n]*(?:"[^"]*"[^"\n]*)*\n')


class RecordSplitter:
    """Cuts one response body into whole records' exact bytes, and the bytes that carried them.

    Only whole records go on to the RowParser, so its rows and these records stay paired one to one.
    JSON relies on the service's layout: "[" then objects separated by ",\\n", then "]\\n"
    (JSON strings cannot hold a raw newline, so each object ends a line).
    """

    def __init__(self, fmt: str) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
        self.format = fmt
        self.head: bytes | None = b"" if fmt == "ndjson" else None
        self._pending = b""
        self._json_closed = False

    @property
    def pending(self) -> bytes:
        """Bytes of a record not complete yet."""
        return self._pending

    def feed(self, data: bytes) -> tuple[bytes, list[bytes]]:
        """(the consumed bytes, ending at a record boundary; the records they complete)."""
        buffer = self._pending + data
        if self.format in ("csv", "text"):
            return self._feed_csv(buffer)
        end = buffer.rfind(b"\n") + 1
        self._pending = buffer[end:]
        lines = buffer[:end].split(b"\n")[:-1]
        if self.format == "ndjson":
            return buffer[:end], lines
        return buffer[:end], self._json_records(lines)

    def _feed_csv(self, buffer: bytes) -> tuple[bytes, list[bytes]]:
        records: list[bytes] = []
        position = 0
        while match := _CSV_RECORD.match(buffer, position):
            records.append(buffer[position : match.end() - 1])
            position = match.end()
        self._pending = buffer[position:]
        if records and self.head is None:
            self.head = records.pop(0) + b"\n"
        return buffer[:position], records

    def _json_records(self, lines: list[bytes]) -> list[bytes]:
        records = []
        for line in lines:
            if self._json_closed:
                raise BodyError("data after the end of the JSON array")
            if self.head is None:
                if not line.startswith(b"["):
                    raise BodyError("JSON body does not start with '['")
                self.head, line = b"[", line[1:]
            if line.endswith(b","):
                records.append(line[:-1])
            elif line.endswith(b"]"):
                self._json_closed = True
                if line[:-1]:
                    records.append(line[:-1])
            else:
                raise BodyError("unexpected JSON layout: a line that ends in neither ',' nor ']'")
        return records
