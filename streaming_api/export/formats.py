"""Output formats: how PostgreSQL renders the rows (the COPY), and what frames them (in Python).

PostgreSQL writes every row's bytes itself with COPY, a page at a time, so no Python code runs per
row: the service's work per page is to pass PostgreSQL's bytes on, whichever endpoint serves them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import BigInteger, Float, Text, cast, func, literal_column
from sqlalchemy.sql import ColumnElement, FromClause

from ..columns import COLUMNS


def _is_number(column: ColumnElement) -> bool:
    return isinstance(column.type, Float | BigInteger)


def _constant(text: str) -> ColumnElement[str]:
    """A text constant of our own, written into the SQL (quotes doubled): the page statement's only
    parameters are then its integer bounds."""
    return literal_column("'" + text.replace("'", "''") + "'", Text)


def _json_line(table: FromClause) -> list[ColumnElement[str]]:
    """One JSON object per row, keys in column order, built with || (less work for PostgreSQL than
    row_to_json, the same bytes): numbers as their shortest-exact text (the table keeps them finite),
    text and timestamps through to_json (RFC 8259 escaping, ISO 8601)."""
    parts: list[ColumnElement[str]] = []
    for i, column in enumerate(table.c):
        parts.append(_constant(("{" if i == 0 else ",") + f'"{column.name}":'))
        parts.append(cast(column, Text) if _is_number(column) else cast(func.to_json(column), Text))
    parts.append(_constant("}"))
    line = parts[0]
    for part in parts[1:]:
        line = line + part
    return [line]


def _csv_columns(table: FromClause) -> list[ColumnElement]:
    # COPY's CSV mode quotes per RFC 4180 (fields holding a quote, comma, CR or LF; quotes doubled).
    return list(table.c)


# COPY in CSV mode with a quote and a delimiter that JSON text never holds raw (it escapes every control
# character) passes each JSON line through untouched; COPY's text mode would double its backslashes.
_RAW_LINES = {"format": "csv", "delimiter": "\x02", "quote": "\x01"}
_CSV = {"format": "csv"}


@dataclass(frozen=True)
class Format:
    name: str
    content_type: str
    # The COPY's select list for a page (one or more columns of the table).
    columns: Callable[[FromClause], list[ColumnElement]]
    # COPY options (asyncpg's copy_from_query keywords): how PostgreSQL writes each row.
    copy_options: Mapping[str, str]
    # Before the first row and after the last (always written, even with no rows).
    head: bytes = b""
    tail: bytes = b""
    # JSON array: rows are separated by ",\n" rather than terminated by "\n".
    comma_separated: bool = False

    @property
    def charset(self) -> str | None:
        return "utf-8" if self.content_type.startswith("text/") else None

    def page_bytes(self, copied: bytes, first: bool) -> bytes:
        """A page as it goes on the wire, from PostgreSQL's COPY output for it."""
        if not self.comma_separated:
            return copied
        # JSON lines hold no raw newline: each one but the last ends a row, so it can become ",\n".
        items = copied[:-1].replace(b"\n", b",\n")
        return items if first else b",\n" + items


CSV_HEADER = (",".join(COLUMNS) + "\n").encode()

FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("ndjson", "application/x-ndjson", _json_line, _RAW_LINES),
        Format("csv", "text/csv", _csv_columns, _CSV, head=CSV_HEADER),
        Format("json", "application/json", _json_line, _RAW_LINES, head=b"[", tail=b"]\n", comma_separated=True),
        # The CSV layout under text/plain, for reading in a terminal.
        Format("text", "text/plain", _csv_columns, _CSV, head=CSV_HEADER),
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
