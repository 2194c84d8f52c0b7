"""Output formats: how PostgreSQL renders the rows (the COPY), and what frames them (in Python).

PostgreSQL writes every row's bytes itself with COPY, a page at a time, so no Python code runs per
row: the service's work per page is to pass PostgreSQL's bytes on, whichever endpoint serves them.
A format's Layout is that for one table and one choice of columns (columns=): the page's query, COPY's
options, the bytes before the first row and after the last, and what becomes of each page's output.
How each type's values are written is the type contract (export.values, docs/types.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from sqlalchemy import select
from sqlalchemy.sql import ColumnElement

from ..db.catalog import Table
from ..db.statements import table_clause
from .layout import Layout
from .values import concat, constant, csv_value, json_key, json_value


def _json_line(served: Table, columns: tuple[str, ...]) -> ColumnElement[str]:
    """One JSON object per row, keys in the columns' order, built with || (less work for PostgreSQL than
    row_to_json, the same bytes), each value as the type contract writes it (export.values)."""
    clause = table_clause(served)
    parts = []
    for i, name in enumerate(columns):
        column = served.column(name)
        assert column is not None
        parts.append(constant(("{" if i == 0 else ",") + json_key(name) + ":"))
        parts.append(json_value(column, clause.c[name]))
    parts.append(constant("}"))
    return concat(*parts)


# COPY in CSV mode with a quote and a delimiter that JSON text never holds raw (it escapes every control
# character) passes each JSON line through untouched; COPY's text mode would double its backslashes.
_RAW_LINES = {"format": "csv", "delimiter": "\x02", "quote": "\x01"}
_CSV = {"format": "csv"}


def _comma_separated(copied: bytes, first: bool) -> bytes:
    """JSON array items: each JSON line (none holds a raw newline) but the last ends with ",\\n"."""
    items = copied[:-1].replace(b"\n", b",\n")
    return items if first else b",\n" + items


def _ndjson(served: Table, columns: tuple[str, ...]) -> Layout:
    line = _json_line(served, columns)
    return Layout(lambda bound: bound(select(line).select_from(table_clause(served))), _RAW_LINES)


def _json(served: Table, columns: tuple[str, ...]) -> Layout:
    line = _json_line(served, columns)
    query = lambda bound: bound(select(line).select_from(table_clause(served)))  # noqa: E731
    return Layout(query, _RAW_LINES, b"[", b"]\n", piece_bytes=_comma_separated)


def _csv_field(name: str) -> str:
    """A header field as COPY's CSV mode would write it (quoted when it holds a comma, quote or newline)."""
    if any(ch in name for ch in ',"\r\n') or name == "":
        return '"' + name.replace('"', '""') + '"'
    return name


def _csv(served: Table, columns: tuple[str, ...]) -> Layout:
    # COPY's CSV mode quotes per RFC 4180 (fields holding a quote, comma, CR or LF; quotes doubled).
    clause = table_clause(served)
    head = (",".join(_csv_field(name) for name in columns) + "\n").encode()
    values = []
    for name in columns:
        column = served.column(name)
        assert column is not None
        values.append(csv_value(column, clause.c[name]))
    return Layout(lambda bound: bound(select(*values).select_from(clause)), _CSV, head)


def _arrow(served: Table, columns: tuple[str, ...]) -> Layout:
    from . import arrow  # pyarrow is an optional dependency: loaded only for the format that needs it

    return arrow.layout(served, columns)


@lru_cache(maxsize=1)
def _arrow_available() -> bool:
    try:
        from . import arrow  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class Format:
    name: str
    content_type: str
    # The file name's extension (orders.<extension>), and the path suffix that names the format.
    extension: str
    make_layout: Callable[[Table, tuple[str, ...]], Layout]
    # Whether this installation can write it (Arrow needs pyarrow).
    available: Callable[[], bool] = field(default=lambda: True)

    @property
    def charset(self) -> str | None:
        return "utf-8" if self.content_type.startswith("text/") else None

    def layout(self, served: Table, columns: tuple[str, ...]) -> Layout:
        """The layout for the table as reflected and these columns, made once for as long as both hold."""
        key = (self.name, served.shape(), columns)
        made = _LAYOUTS.get(key)
        if made is None:
            if len(_LAYOUTS) >= _LAYOUTS_KEPT:
                _LAYOUTS.clear()
            made = _LAYOUTS[key] = self.make_layout(served, columns)
        return made


_LAYOUTS: dict[tuple, Layout] = {}
_LAYOUTS_KEPT = 512


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("ndjson", "application/x-ndjson", "ndjson", _ndjson),
        Format("csv", "text/csv", "csv", _csv),
        Format("json", "application/json", "json", _json),
        # The CSV layout under text/plain, for reading in a terminal.
        Format("text", "text/plain", "txt", _csv),
        # An Arrow IPC stream: typed and columnar, read without parsing (pyarrow, polars, pandas, DuckDB).
        Format("arrow", "application/vnd.apache.arrow.stream", "arrow", _arrow, _arrow_available),
    )
}
DEFAULT_FORMAT = FORMATS["ndjson"]
BY_EXTENSION = {f.extension: f for f in FORMATS.values()}


class NotAcceptable(ValueError):
    """No offered format matches the Accept header."""


def quality_values(header: str) -> list[tuple[str, float]]:
    """The items of an Accept-style header (lower case) with their q-values, in the header's order
    (RFC 9110 section 12.4.2); a malformed or out-of-range q counts as 0."""
    items = []
    for item in header.split(","):
        name, *params = (part.strip() for part in item.split(";"))
        if not name:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:
                    q = 0.0
        items.append((name.lower(), q))
    return items


def _parse_accept(header: str) -> list[tuple[float, int, str]]:
    """Media ranges with their q-values and their place in the header."""
    return [(q, position, media) for position, (media, q) in enumerate(quality_values(header))]


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
    ranges = _parse_accept(accept)
    best: tuple[float, int, int, int] | None = None
    chosen: Format | None = None
    for fmt_order, fmt in enumerate(FORMATS.values()):
        # The q of the most specific range that matches this format decides for it (RFC 9110 12.5.1).
        matching = [(_matches(media, fmt.content_type), q, pos) for q, pos, media in ranges]
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
