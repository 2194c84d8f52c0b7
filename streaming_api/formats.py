"""Output formats: how one row is rendered (in SQL, by PostgreSQL) and what frames the rows (in Python).

PostgreSQL renders each row to text and joins a whole page into one string, so no Python code runs
per row: the service's Python work per page is one decode and one encode, whichever endpoint serves it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Text, case, cast, func, literal, literal_column
from sqlalchemy.sql import ColumnElement, FromClause

from .db import COLUMNS


def _json_line(page: FromClause) -> ColumnElement[str]:
    # row_to_json keeps column order, escapes per RFC 8259 and writes doubles shortest-exact.
    return cast(func.row_to_json(literal_column(page.name)), Text)


def _csv_field(column: ColumnElement) -> ColumnElement[str]:
    """RFC 4180: quote a text field that holds a quote, comma, CR or LF; double the quotes inside."""
    return case(
        (column.regexp_match('[",\r\n]'), literal('"') + func.replace(column, '"', '""') + literal('"')),
        else_=column,
    )


def _csv_line(page: FromClause) -> ColumnElement[str]:
    c = page.c
    # to_json(timestamptz) #>> '{}' is the same ISO 8601 text row_to_json writes, so formats agree.
    recorded_at = func.to_json(c.recorded_at).op("#>>")(literal_column("'{}'"))
    return func.concat_ws(",", c.id, c.x, c.y, _csv_field(c.label), c.value, recorded_at)


@dataclass(frozen=True)
class Format:
    name: str
    content_type: str
    # SQL that renders one row of the page subquery as text.
    line: Callable[[FromClause], ColumnElement[str]]
    # Between two rows, inside a page and between pages.
    row_separator: str
    # Before the first row (always written, even with no rows).
    head: bytes = b""
    # After the last row, only when there was at least one.
    after_rows: bytes = b""
    # Last of all (always written).
    tail: bytes = b""

    @property
    def charset(self) -> str | None:
        return "utf-8" if self.content_type.startswith("text/") else None

    @property
    def header_value(self) -> str:
        return f"{self.content_type}; charset=utf-8" if self.charset else self.content_type


CSV_HEADER = (",".join(COLUMNS) + "\n").encode()

FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("ndjson", "application/x-ndjson", _json_line, "\n", after_rows=b"\n"),
        Format("csv", "text/csv", _csv_line, "\n", head=CSV_HEADER, after_rows=b"\n"),
        Format("json", "application/json", _json_line, ",\n", head=b"[", tail=b"]\n"),
        # The CSV layout under text/plain, for reading in a terminal.
        Format("text", "text/plain", _csv_line, "\n", head=CSV_HEADER, after_rows=b"\n"),
    )
}
DEFAULT_FORMAT = FORMATS["ndjson"]


class NotAcceptable(ValueError):
    """No offered format matches the Accept header."""


def _parse_accept(header: str) -> list[tuple[float, int, str]]:
    """Media ranges with their q-values, best first; ties keep header order, more specific wins."""
    ranges = []
    for position, item in enumerate(header.split(",")):
        parts = [p.strip() for p in item.split(";")]
        media = parts[0].lower()
        if not media:
            continue
        q = 1.0
        for param in parts[1:]:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:
                    q = 0.0
        ranges.append((q, position, media))
    return ranges


def _matches(media_range: str, content_type: str) -> int:
    """0 for no match, else specificity: 1 for */*, 2 for type/*, 3 for an exact type."""
    if media_range == "*/*":
        return 1
    main, _, sub = media_range.partition("/")
    ct_main = content_type.partition("/")[0]
    if sub == "*" and main == ct_main:
        return 2
    return 3 if media_range == content_type else 0


def negotiate(accept: str | None) -> Format:
    """The format for an Accept header (q-values honoured); ndjson for none or */*."""
    if accept is None or not accept.strip():
        return DEFAULT_FORMAT
    best: tuple[float, int, int, int] | None = None
    chosen: Format | None = None
    for fmt_order, fmt in enumerate(FORMATS.values()):
        # The q of the most specific range that matches this format decides for it (RFC 9110 12.5.1).
        matching = [(_matches(media, fmt.content_type), q, pos) for q, pos, media in _parse_accept(accept)]
        matching = [m for m in matching if m[0]]
        if not matching:
            continue
        specificity, q, pos = max(matching, key=lambda m: (m[0], -m[2]))
        if q <= 0:
            continue
        # Prefer higher q, then a type named explicitly over a wildcard, then the client's order.
        rank = (q, specificity, -pos, -fmt_order)
        if best is None or rank > best:
            best, chosen = rank, fmt
    if chosen is None:
        raise NotAcceptable(accept)
    return chosen
