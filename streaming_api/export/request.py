"""A request's parameters as an Export: which rows, in which format, in pages of what size.

Every problem is a BadParameter naming the parameter (the web layer turns it into a 400).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from multidict import MultiMapping

from ..columns import COLUMNS
from ..db.statements import MAX_ID
from .formats import FORMATS, Format, negotiate
from .layout import Layout

# Plain ASCII digits only: int() would also take " 1", "1_000" and other scripts' digits.
_INTEGER = re.compile(r"-?[0-9]{1,20}")


class BadParameter(ValueError):
    def __init__(self, name: str, detail: str) -> None:
        super().__init__(f"{name}: {detail}")
        self.name = name
        self.detail = detail


class FormatUnavailable(ValueError):
    """The format is known but this installation cannot write it (Arrow without pyarrow)."""

    def __init__(self, fmt: Format) -> None:
        super().__init__(fmt.name)
        self.format = fmt


@dataclass(frozen=True)
class Export:
    format: Format
    # The columns each row carries, in this order (columns=); every one by default.
    columns: tuple[str, ...] = COLUMNS
    after_id: int = 0
    limit: int | None = None
    # Rows per query; None means all of them in one query (/standard).
    page_size: int | None = None
    # A smaller first page (/chunked), so the first bytes leave sooner; None: page_size.
    first_page_size: int | None = None

    @property
    def layout(self) -> Layout:
        return self.format.layout(self.columns)


def _columns_param(query: Mapping[str, str]) -> tuple[str, ...]:
    raw = query.get("columns")
    if raw is None:
        return COLUMNS
    names = tuple(name.strip() for name in raw.split(","))
    for name in names:
        if name not in COLUMNS:
            shown = f"{name[:40]!r}" if name else "an empty name"
            raise BadParameter("columns", f"{shown} is not a column; the columns are {', '.join(COLUMNS)}")
    repeated = next((name for name in names if names.count(name) > 1), None)
    if repeated:
        raise BadParameter("columns", f"{repeated!r} is named twice")
    return names


def _int_param(query: Mapping[str, str], name: str, low: int, high: int) -> int | None:
    raw = query.get(name)
    if raw is None:
        return None
    if not _INTEGER.fullmatch(raw):
        raise BadParameter(name, f"must be an integer, got {raw[:40]!r}")
    value = int(raw)
    if not low <= value <= high:
        raise BadParameter(name, f"must be between {low:,} and {high:,}, got {value:,}")
    return value


def parse_export(
    query: MultiMapping[str],
    accept: str | None,
    allowed: set[str],
    default_page_size: int | None,
    max_page_size: int,
    first_page_size: int | None = None,
    path_format: Format | None = None,
) -> Export:
    """Validate the query string; every problem is a BadParameter naming the parameter.

    A format named by the path's suffix (/chunked.csv) or by ?format= wins over the Accept header (the
    two must agree); only without either is Accept negotiated (NotAcceptable).
    """
    for name in query:
        if name not in allowed:
            raise BadParameter(name, f"unknown parameter; this endpoint accepts {', '.join(sorted(allowed))}")
    for name in set(query):
        if len(query.getall(name)) > 1:
            raise BadParameter(name, "given more than once")
    if "format" in query:
        name = query["format"]
        if name not in FORMATS:
            raise BadParameter("format", f"must be one of {', '.join(FORMATS)}, got {name[:40]!r}")
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
    return Export(
        format=fmt,
        columns=_columns_param(query),
        after_id=_int_param(query, "after_id", 0, MAX_ID) or 0,
        limit=_int_param(query, "limit", 0, MAX_ID),
        page_size=page_size or default_page_size,
        first_page_size=first_page_size or None,
    )
