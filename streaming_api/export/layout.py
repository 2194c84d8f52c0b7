"""What a format is for one choice of columns: the page's query, COPY's options, and the framing."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import Select

# Applies a page's bounds (id range, order, row count) to a query over the points table.
Bound = Callable[[Select], Select]


def _same(copied: bytes, first: bool) -> bytes:
    return copied


def _rows_copied(copied: bytes, copied_rows: int) -> int:
    return copied_rows


@dataclass(frozen=True)
class Layout:
    """A format for one choice of columns."""

    # The statement a page's COPY exports, given how to bound it.
    query: Callable[[Bound], Select]
    # COPY options (asyncpg's copy_from_query keywords): how PostgreSQL writes each row.
    copy_options: Mapping[str, str]
    # Before the first row and after the last (always written, even with no rows).
    head: bytes = b""
    tail: bytes = b""
    # A page as it goes on the wire, from PostgreSQL's COPY output for it.
    page_bytes: Callable[[bytes, bool], bytes] = field(default=_same)
    # The rows a page holds, from its COPY output and the rows COPY reported (one per row, but for a
    # format that has PostgreSQL fold a page into one row).
    rows: Callable[[bytes, int], int] = field(default=_rows_copied)
