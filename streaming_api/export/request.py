"""A request's parameters as an Export: which table, which rows, in which format, in pages of what size.

Every problem is a BadParameter naming the parameter (the web layer turns it into a 400).

Resuming: `after` names the last row received by its key, in the key's column order, as a JSON array
(`after=[42]`, `after=["acme",17]`, `after=["2026-01-01T00:00:00+00:00"]`), or for a key of one column
as the bare value (`after=42`, when it does not start with "["); `after_id=N` is `after=[N]` for a key
of one integer column (points' id). A value is read as its column's type: an integer here, anything else
by PostgreSQL (db.statements.validate_key_sql) before the export starts.

Filtering: any other parameter names a column and filters on it (`value=gte.10`, db.filters); a column
named like one of the endpoints' parameters is named in double quotes (`"limit"=eq.5`). Its values are
read as the column's type before the export starts too (web.replies.resolve_values).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from multidict import MultiMapping

from ..db.catalog import Table
from ..db.filters import Filter, FilterError, Where, column_named, is_quoted, parse_filter, shown
from ..db.snapshot_units import Moment
from ..db.snapshots import SNAPSHOT_ID
from ..db.statements import INTEGER_MAX, MAX_ID, KeyValue
from .formats import FORMATS, Format, negotiate
from .layout import Layout

# Plain ASCII digits only: int() would also take " 1", "1_000" and other scripts' digits.
_INTEGER = re.compile(r"-?[0-9]{1,20}")
_SHOWN = 60
# A source's label in a snapshot's name (primary, replica1...).
_SOURCE_LABEL = re.compile(r"[a-z]+[0-9]*")
# A whole page (Arrow) is held a few times over while its batch is made (its output, the next page's, the
# converted buffers, the message): it holds at most a quarter of page_bytes...
WHOLE_PAGE_COPIES = 4
# ... and, without page_size, about a sixteenth (512 KB by default): 10,000 points rows, 3,000 of orders'
# (the server's RSS growth per export 4 MB, against 15 MB for 10,000 orders rows).
WHOLE_PAGE_TARGET_SHARE = 16


class BadParameter(ValueError):
    def __init__(self, name: str, detail: str, **extra: object) -> None:
        super().__init__(f"{name}: {detail}")
        self.name = name
        self.detail = detail
        # More for the JSON body (a filter's column and its type).
        self.extra = extra

    @classmethod
    def of_filter(cls, exc: FilterError) -> BadParameter:
        column = exc.column
        extra = {} if column is None else {"column": column.name, "type": column.declared}
        return cls(exc.parameter, exc.detail, **extra)


class FormatUnavailable(ValueError):
    """The format is known but this installation cannot write it (Arrow without pyarrow)."""

    def __init__(self, fmt: Format) -> None:
        super().__init__(fmt.name)
        self.format = fmt


@dataclass(frozen=True)
class Export:
    table: Table
    format: Format
    # The columns each row carries, in this order (columns=); every one by default.
    columns: tuple[str, ...]
    # Rows after this key value (SQL literals, one per key column); None: from the start.
    after: KeyValue | None = None
    # `after` as the request gave it, still to be read as the key's types by PostgreSQL (not integers).
    after_text: tuple[str, ...] | None = None
    limit: int | None = None
    # Rows per query; None means all of them in one query (/standard).
    page_size: int | None = None
    # A smaller first page (/chunked), so the first bytes leave sooner; None: page_size.
    first_page_size: int | None = None
    # About how many bytes a page may hold (its rows are fewer where rows are wide); None: no bound.
    page_bytes: int | None = None
    # snapshot= as asked: (the server's label, the snapshot's id) to continue in; None: a snapshot of now
    # (/chunked) or none needed (one statement); "off": /chunked's pages read the database as it is then.
    snapshot_asked: tuple[str, str] | str | None = None
    # The snapshot the export reads, as the response names it (X-Snapshot); None: no snapshot of its own.
    snapshot: Moment | None = None
    # The request's filters (ANDed), as parsed; and once every value is checked, the SQL they add (None:
    # no filter, or not checked yet).
    filters: tuple[Filter, ...] = ()
    where: Where | None = None

    @property
    def filter_parameters(self) -> list[str]:
        """The parameters that named the filters, each once."""
        return list(dict.fromkeys(f.parameter for f in self.filters))

    @property
    def where_sql(self) -> str | None:
        """The filters' condition as a page's statement writes it (None: every row)."""
        assert self.where is not None or not self.filters, "the filters' values are not checked yet"
        return None if self.where is None else self.where.sql

    @property
    def layout(self) -> Layout:
        return self.format.layout(self.table, self.columns)

    @property
    def after_integer(self) -> int | None:
        """`after` as an int, for a key of one integer column."""
        return int(self.after[0]) if self.after is not None and self.table.integer_key else None

    def resolved(self, literals: KeyValue) -> Export:
        return replace(self, after=literals, after_text=None)


def split_names(raw: str) -> tuple[str, ...]:
    """A comma-separated list of exact names; a name holding a comma or a quote is written in double
    quotes, a quote inside doubled: "a,b",c."""
    names: list[str] = []
    position = 0
    while True:
        if raw.startswith('"', position):
            end = position + 1
            while True:
                end = raw.find('"', end)
                if end < 0:
                    raise BadParameter("columns", "a double quote is not closed")
                if raw.startswith('""', end):
                    end += 2
                    continue
                break
            names.append(raw[position + 1 : end].replace('""', '"'))
            position = end + 1
            if position < len(raw) and raw[position] != ",":
                raise BadParameter("columns", "a quoted name must be followed by a comma or the end")
        else:
            comma = raw.find(",", position)
            names.append(raw[position : len(raw) if comma < 0 else comma].strip())
            position = len(raw) if comma < 0 else comma
        if position >= len(raw):
            return tuple(names)
        position += 1


def _columns_param(query: Mapping[str, str], served: Table) -> tuple[str, ...]:
    raw = query.get("columns")
    if raw is None:
        return served.names
    names = split_names(raw)
    for name in names:
        if served.column(name) is None:
            shown = f"{name[:_SHOWN]!r}" if name else "an empty name"
            listed = ", ".join(served.names)
            raise BadParameter("columns", f"{shown} is not a column of {served.qualified}; its columns are {listed}")
    repeated = next((name for name in names if names.count(name) > 1), None)
    if repeated:
        raise BadParameter("columns", f"{repeated!r} is named twice")
    return names


def _int_param(query: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    return _integer(name, raw, low, high)


def _integer(name: str, raw: str, low: int, high: int) -> int:
    if not _INTEGER.fullmatch(raw):
        raise BadParameter(name, f"must be an integer, got {raw[:_SHOWN]!r}")
    value = int(raw)
    if not low <= value <= high:
        raise BadParameter(name, f"must be between {low:,} and {high:,}, got {value:,}")
    return value


def _key_values(raw: str, served: Table) -> tuple[str, ...]:
    """after= as the key's values, in text (each still to be read as its column's type)."""
    described = f"the key of {served.qualified} is ({', '.join(served.key)})"
    if not raw.startswith("["):
        if len(served.key) != 1:
            raise BadParameter("after", f"{described}: give its {len(served.key)} values as a JSON array")
        return (raw,)
    try:
        values = json.loads(raw, parse_int=str, parse_float=str, parse_constant=_no_constant)
    except ValueError:
        raise BadParameter("after", f"not a JSON array: {raw[:_SHOWN]!r}") from None
    if not isinstance(values, list) or len(values) != len(served.key):
        raise BadParameter("after", f"{described}: give {len(served.key)} value(s) in a JSON array")
    texts = []
    for value in values:
        if isinstance(value, bool):
            texts.append("true" if value else "false")
        elif isinstance(value, str):
            texts.append(value)
        else:
            raise BadParameter("after", f"{described}: each value a string or a number, never null, got {value!r}")
    return tuple(texts)


def _filters(query: MultiMapping[str], served: Table, reserved: frozenset[str]) -> tuple[Filter, ...]:
    """Every parameter that is not one of the endpoints' own, as a filter on the column it names."""
    filters = []
    for name in dict.fromkeys(query):
        if name in reserved:
            continue
        column = column_named(name, served)
        if column is None:
            listed = ", ".join(served.names)
            if is_quoted(name):
                detail = f"{shown(name)} names no column of {served.qualified}; its columns are {listed}"
                raise BadParameter(name, detail)
            raise BadParameter(
                name,
                f"{shown(name)} is neither a parameter of this endpoint ({', '.join(sorted(reserved))}) nor a "
                f"column of {served.qualified} ({listed}) to filter on",
            )
        for raw in query.getall(name):
            try:
                filters.append(parse_filter(name, column, raw))
            except FilterError as exc:
                raise BadParameter.of_filter(exc) from None
    return tuple(filters)


def _snapshot(raw: str | None) -> tuple[str, str] | str | None:
    """snapshot= as a response's X-Snapshot named it (server:id), or "off"."""
    if raw is None or raw == "off":
        return raw
    label, _, snapshot = raw.partition(":")
    if not _SOURCE_LABEL.fullmatch(label) or not SNAPSHOT_ID.fullmatch(snapshot):
        raise BadParameter("snapshot", f"must be what a response's X-Snapshot said, or off; got {raw[:_SHOWN]!r}")
    return label, snapshot


def _no_constant(name: str) -> None:
    raise ValueError(name)


def _after(query: Mapping[str, str], served: Table) -> tuple[KeyValue | None, tuple[str, ...] | None]:
    """(the key value as literals, when it is already checked; else its text for PostgreSQL to read)."""
    raw_after, raw_id = query.get("after"), query.get("after_id")
    if raw_after is None and raw_id is None:
        return None, None
    named = "after" if raw_after is not None else "after_id"
    if raw_after is not None and raw_id is not None:
        raise BadParameter("after_id", "give after or after_id, not both")
    if not served.key:
        raise BadParameter(
            named,
            f"{served.qualified} has no key to resume after (it is a {served.kind} without a primary key or a "
            "unique index on NOT NULL columns): its exports run whole",
        )
    if raw_id is not None:
        if not served.integer_key:
            raise BadParameter("after_id", f"the key of {served.qualified} is not one integer column: use after")
        return (str(_integer("after_id", raw_id, 0, MAX_ID)),), None
    assert raw_after is not None
    texts = _key_values(raw_after, served)
    if served.integer_key:
        column = served.column(served.key[0])
        assert column is not None and column.type.builtin is not None
        top = INTEGER_MAX[column.type.builtin]
        return (str(_integer("after", texts[0], -top - 1, top)),), None
    return None, texts


def parse_export(
    query: MultiMapping[str],
    served: Table,
    accept: str | None,
    allowed: set[str],
    default_page_size: int | None,
    max_page_size: int,
    first_page_size: int | None = None,
    path_format: Format | None = None,
    page_bytes: int | None = None,
    whole_page_size: int | None = None,
    reserved: frozenset[str] = frozenset(),
) -> Export:
    """Validate the query string; every problem is a BadParameter naming the parameter.

    A format named by the path's suffix (/chunked.csv) or by ?format= wins over the Accept header (the
    two must agree); only without either is Accept negotiated (NotAcceptable). A parameter that is not
    `reserved` (the parameters of any endpoint; `allowed` are this one's) is a filter on a column.
    """
    reserved = reserved | allowed
    for name in query:
        if name in reserved and name not in allowed:
            raise BadParameter(name, f"not a parameter of this endpoint; it accepts {', '.join(sorted(allowed))}")
    for name in set(query):
        if name in reserved and len(query.getall(name)) > 1:
            raise BadParameter(name, "given more than once")
    filters = _filters(query, served, reserved)
    if "format" in query:
        name = query["format"]
        if name not in FORMATS:
            raise BadParameter("format", f"must be one of {', '.join(FORMATS)}, got {name[:_SHOWN]!r}")
        fmt = FORMATS[name]
    elif path_format is not None:
        fmt = path_format
    else:
        fmt = negotiate(accept)
    if path_format is not None and fmt is not path_format:
        raise BadParameter("format", f"{fmt.name} contradicts the path's .{path_format.extension}")
    if not fmt.available():
        raise FormatUnavailable(fmt)
    page_size = _int_param(query, "page_size", 1, max_page_size) if "page_size" in allowed else None
    after, after_text = _after(query, served)
    snapshot_asked = _snapshot(query.get("snapshot"))
    export = Export(
        table=served,
        format=fmt,
        columns=_columns_param(query, served),
        after=after,
        after_text=after_text,
        limit=_int_param(query, "limit", 0, MAX_ID),
        page_size=page_size or default_page_size,
        first_page_size=first_page_size or None,
        page_bytes=page_bytes,
        snapshot_asked=snapshot_asked,
        filters=filters,
        # Filters read here alone (integers, is.) need no statement to be checked.
        where=Where(served, filters) if filters and all(f.checked for f in filters) else None,
    )
    if export.layout.whole_pages and page_size is None and whole_page_size is not None:
        # A whole-page format (Arrow) has a default of its own: its rows cost less than text's, its pages the same.
        rows = whole_page_size
        if page_bytes and served.row_bytes:
            rows = max(1, min(rows, int(page_bytes // WHOLE_PAGE_TARGET_SHARE // served.row_bytes)))
        export = replace(export, page_size=rows)
    if page_bytes and export.layout.whole_pages:
        export = replace(export, page_bytes=max(page_bytes // WHOLE_PAGE_COPIES, 1))
    return export
