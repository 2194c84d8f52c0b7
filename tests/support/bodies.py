"""Reading response bodies back with the standard library, independently of the service's own code."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
from typing import Any

# The points table's columns, in order, as the issue defines them.
COLUMNS = ["id", "x", "y", "label", "value", "recorded_at"]
CONTENT_TYPES = {
    "ndjson": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "text": "text/plain; charset=utf-8",
}
FORMATS = tuple(CONTENT_TYPES)
ENDPOINTS = ("standard", "chunked")

Row = dict[str, Any]


def typed(raw: Row) -> Row:
    """A parsed row with numbers and the timestamp as Python values, comparable to what asyncpg returns."""
    return {
        "id": int(raw["id"]),
        "x": float(raw["x"]),
        "y": float(raw["y"]),
        "label": raw["label"],
        "value": float(raw["value"]),
        "recorded_at": dt.datetime.fromisoformat(raw["recorded_at"]),
    }


def raw_rows(fmt: str, body: bytes) -> list[Row]:
    """The rows of a body as dicts of the values exactly as written (strings for csv/text); keys in body order."""
    if fmt == "ndjson":
        assert body == b"" or body.endswith(b"\n"), "ndjson must end each row with a newline"
        # Split on b"\n" only: str.splitlines would also split on characters JSON leaves unescaped.
        return [json.loads(line) for line in body.split(b"\n")[:-1]]
    if fmt == "json":
        rows = json.loads(body)
        assert isinstance(rows, list)
        return rows
    reader = csv.reader(io.StringIO(body.decode("utf-8"), newline=""))
    header = next(reader)
    assert header == COLUMNS
    rows = []
    for record in reader:
        assert len(record) == len(COLUMNS), record
        rows.append(dict(zip(COLUMNS, record, strict=True)))
    return rows


def parse(fmt: str, body: bytes) -> list[Row]:
    return [typed(row) for row in raw_rows(fmt, body)]


def ids(fmt: str, body: bytes) -> list[int]:
    return [row["id"] for row in parse(fmt, body)]


# Every row starts with its id: `{"id":N,` in ndjson and json, `N,` at the start of a csv/text line.
_JSON_IDS = re.compile(rb'\{"id":(\d+),')
_CSV_IDS = re.compile(rb"^(\d+),", re.MULTILINE)
CSV_HEADER = (",".join(COLUMNS) + "\n").encode()


def row_ids(fmt: str, data: bytes) -> list[int]:
    """The ids of the rows in a body or a part of one, without checking its framing."""
    if fmt in ("ndjson", "json"):
        return [int(i) for i in _JSON_IDS.findall(data)]
    return [int(i) for i in _CSV_IDS.findall(data, len(CSV_HEADER))] if data.startswith(CSV_HEADER) else []


def body_ids(fmt: str, body: bytes) -> list[int]:
    """The ids of a whole body, after checking its framing; cheap enough for the load test."""
    if fmt == "ndjson":
        assert body == b"" or body.endswith(b"\n"), "ndjson must end with a newline"
        ids = _JSON_IDS.findall(body)
        assert len(ids) == body.count(b"\n"), "one row per line"
    elif fmt == "json":
        assert body.startswith(b"[") and body.endswith(b"]\n"), "json must be one array"
        ids = _JSON_IDS.findall(body)
        assert len(ids) == body.count(b",\n") + (1 if ids else 0), "rows separated by ,\\n"
    else:
        assert body.startswith(CSV_HEADER), "csv starts with its header"
        assert body == CSV_HEADER or body.endswith(b"\n")
        ids = _CSV_IDS.findall(body, len(CSV_HEADER))
    return [int(i) for i in ids]


def assert_rows(fmt: str, body: bytes, after_id: int, count: int) -> None:
    """The body holds exactly rows after_id+1 .. after_id+count, in order."""
    ids = body_ids(fmt, body)
    assert len(ids) == count, f"{len(ids)} rows, expected {count}"
    assert ids == list(range(after_id + 1, after_id + 1 + count)), "ids must run on without gaps or repeats"


def complete_rows(fmt: str, partial: bytes) -> bytes:
    """The prefix of a cut-off body that holds only whole rows (what a client can keep and resume after)."""
    if fmt == "json":
        # Rows are separated by ",\n" and hold no raw newline (JSON escapes it).
        end = partial.rfind(b",\n")
        return partial[: end + 2] if end >= 0 else partial[:1]
    if fmt == "ndjson":
        return partial[: partial.rfind(b"\n") + 1]
    # csv/text: a record ends at a newline outside quotes (a label may hold a quoted newline).
    end, quotes = 0, 0
    for position, byte in enumerate(partial):
        if byte == 0x22:
            quotes += 1
        elif byte == 0x0A and quotes % 2 == 0:
            end = position + 1
    return partial[:end]
