"""Reading response bodies back with the standard library, independently of the service's own code."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
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
