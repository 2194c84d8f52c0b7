"""What a format is for one table and one choice of columns: the page's query, COPY's options, the framing."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Select

from ..db.catalog import Table
from ..db.statements import Bound, PageSpec, PageTemplate, page_template


def _same(copied: bytes, first: bool) -> bytes:
    return copied


def _rows_copied(copied: bytes, copied_rows: int) -> int:
    return copied_rows


@dataclass(frozen=True)
class Layout:
    """A format for one table and one choice of columns."""

    # The statement a page's COPY exports, given how to bound it.
    query: Callable[[Bound], Select]
    # COPY options (asyncpg's copy_from_query keywords): how PostgreSQL writes each row.
    copy_options: Mapping[str, str]
    # Before the first row and after the last (always written, even with no rows).
    head: bytes = b""
    tail: bytes = b""
    # Text formats: PostgreSQL's output passes on as it arrives, in pieces that end at a line's end,
    # each made ready for the wire by `piece_bytes` (first: the export's first piece). A whole-page
    # format (Arrow) needs all of a page's output first, and `page_bytes` makes it ready.
    whole_pages: bool = False
    piece_bytes: Callable[[bytes, bool], bytes] = field(default=_same)
    page_bytes: Callable[[bytes, bool], bytes | memoryview] = field(default=_same)
    # The rows a page holds, from its COPY output and the rows COPY reported (one per row, but for a
    # format that has PostgreSQL fold a page into one row).
    rows: Callable[[bytes, int], int] = field(default=_rows_copied)
    # A whole-page format over a relation without a key reads it through a cursor (one transaction): the
    # cursor's query, and a page of its rows made ready for the wire (with how many rows it holds).
    # (Given the export's filters, db.filters.Where.sql, or None.)
    cursor_query: Callable[[str | None], Select] | None = None
    cursor_page: Callable[[Sequence[Sequence[bytes | None]]], tuple[int, bytes | memoryview]] | None = None
    # Its page statements, compiled once per shape of bounds and filtered or not (db.statements.PageTemplate).
    templates: dict[tuple[bool, bool, bool, bool], PageTemplate] = field(default_factory=dict, compare=False)

    def page_sql(self, served: Table, spec: PageSpec, where: str | None = None) -> str:
        """A page's statement; `where`: the export's filters (db.filters.Where.sql)."""
        shape = (spec.after is not None, spec.last is not None, spec.rows is not None, where is not None)
        template = self.templates.get(shape)
        if template is None:
            template = self.templates[shape] = page_template(served, self.query, spec, where is not None)
        return template.render(spec, where)
