"""The SQL an export runs, built with SQLAlchemy Core over the reflected table.

Every page is one statement, so an export works behind PgBouncer in transaction pooling mode, where two
statements in a row may run on different server connections: no session state.

A page is a COPY, which takes no bound parameters, so everything in it is written into the statement:
identifiers from the reflected catalog (always quoted), integers, and key values as SQL literals that
PostgreSQL itself produced (quote_literal of a typed value) or a Python int's digits. No request text
reaches the SQL any other way, and nothing rewrites the statement afterwards (a `$1` inside a quoted
column name stays what it is). A request's filters come here as SQL already written by db.filters, under
the same rules (`where`: a condition over the table as a page names it, or aliased t in a plan).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import asyncpg
from sqlalchemy import Select, func, literal_column, select, table, tuple_
from sqlalchemy import column as sql_column
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import ClauseElement, ColumnElement, TableClause
from sqlalchemy.sql.elements import quoted_name

from .catalog import Table

DIALECT = postgresql.asyncpg.dialect(paramstyle="numeric_dollar")
MAX_ID = 2**63 - 1
# The largest value of each integer key type: an id range's upper end never goes past it.
INTEGER_MAX = {"int2": 2**15 - 1, "int4": 2**31 - 1, "int8": MAX_ID}

# One value per key column, each an SQL literal ('...' from quote_literal, or an integer's digits).
KeyValue = tuple[str, ...]
# Applies a page's bounds (key range, order, row count) to a query over the table.
Bound = Callable[[Select], Select]


def quote_identifier(name: str) -> str:
    """An identifier as SQL text, always quoted (its case, spaces, quotes and non-ASCII kept)."""
    return DIALECT.identifier_preparer.quote_identifier(name)


def sql_text(statement: ClauseElement) -> str:
    """A statement whose every value is already written into it (ints, PostgreSQL's own literals)."""
    return str(statement.compile(dialect=DIALECT, compile_kwargs={"literal_binds": True}))


def table_clause(served: Table) -> TableClause:
    """The table for SQLAlchemy, every name quoted: one object per table as reflected, so that the parts of
    a statement built apart (the columns a format selects, the page's bounds) name the same FROM."""
    return _clause(served.schema, served.name, served.names)


@lru_cache(maxsize=1024)
def _clause(schema: str, name: str, names: tuple[str, ...]) -> TableClause:
    return table(
        quoted_name(name, True),
        *(sql_column(quoted_name(column, True)) for column in names),
        schema=quoted_name(schema, True),
    )


def _literals(values: KeyValue) -> list[ColumnElement]:
    return [literal_column(value) for value in values]


def key_after(clause: TableClause, key: Sequence[str], values: KeyValue) -> ColumnElement[bool]:
    """key > values: a row comparison for a key of several columns (the btree walks it in order)."""
    if len(key) == 1:
        return clause.c[key[0]] > literal_column(values[0])
    return tuple_(*(clause.c[name] for name in key)) > tuple_(*_literals(values))


def key_up_to(clause: TableClause, key: Sequence[str], values: KeyValue) -> ColumnElement[bool]:
    if len(key) == 1:
        return clause.c[key[0]] <= literal_column(values[0])
    return tuple_(*(clause.c[name] for name in key)) <= tuple_(*_literals(values))


@dataclass(frozen=True)
class PageSpec:
    """One page's bounds: its rows have after < key <= last (None: no bound), at most `rows` of them."""

    after: KeyValue | None
    last: KeyValue | None
    rows: int | None


def _bound(
    served: Table, after: KeyValue | None, last: KeyValue | None, rows: str | None, where: str | None = None
) -> Bound:
    clause = table_clause(served)

    def bound(query: Select) -> Select:
        if where is not None:
            query = query.where(literal_column(where))
        if after is not None:
            query = query.where(key_after(clause, served.key, after))
        if last is not None:
            query = query.where(key_up_to(clause, served.key, last))
        if served.key:
            query = query.order_by(*(clause.c[name] for name in served.key))
        if rows is not None:
            query = query.limit(literal_column(rows))
        return query

    return bound


# Marks where a page's values go in its compiled statement: a NUL, which no SQL text, identifier or
# literal of PostgreSQL's can hold, so the marks cannot be mistaken for anything a table is named.
_MARK = "\x00"


@dataclass(frozen=True)
class PageTemplate:
    """A page statement compiled once for a shape of bounds (is there an `after`, a `last`, a row limit),
    its values written in by `render`: compiling the SQLAlchemy statement for every page cost more CPU
    than passing the page's bytes on."""

    fragments: tuple[str, ...]
    # What goes after each fragment but the last: ("after" | "last", column index), ("rows", 0) or ("where", 0).
    slots: tuple[tuple[str, int], ...]

    def render(self, spec: PageSpec, where: str | None = None) -> str:
        values = {
            "after": spec.after,
            "last": spec.last,
            "rows": None if spec.rows is None else (str(spec.rows),),
            "where": None if where is None else (where,),
        }
        parts = [self.fragments[0]]
        for (name, index), fragment in zip(self.slots, self.fragments[1:], strict=True):
            bound = values[name]
            assert bound is not None
            parts.append(bound[index])
            parts.append(fragment)
        return "".join(parts)


def page_template(
    served: Table, query: Callable[[Bound], Select], spec: PageSpec, filtered: bool = False
) -> PageTemplate:
    """The template of the pages shaped like `spec`, with the export's filters when `filtered` (its values
    are only placeholders here)."""
    width = len(served.key)

    def marks(name: str) -> KeyValue:
        return tuple(f"{_MARK}{name}:{i}{_MARK}" for i in range(width))

    bound = _bound(
        served,
        None if spec.after is None else marks("after"),
        None if spec.last is None else marks("last"),
        None if spec.rows is None else f"{_MARK}rows:0{_MARK}",
        f"{_MARK}where:0{_MARK}" if filtered else None,
    )
    pieces = sql_text(query(bound)).split(_MARK)
    slots = []
    for token in pieces[1::2]:
        name, _, index = token.partition(":")
        slots.append((name, int(index)))
    return PageTemplate(tuple(pieces[0::2]), tuple(slots))


def plan_sql(
    served: Table, after: KeyValue | None, size: int, pages: int, budget: int | None, where: str | None = None
) -> str:
    """Where the next `pages` pages after `after` end, every `size` rows: one statement that walks the key's
    index (a recursive query, each bound found from the one before). With a byte `budget`, a page also
    ends before its rows' bytes pass it (for tables whose rows are wide; this reads the rows, not just the
    index). `where`: only the rows the export's filters keep count (over the table aliased t). Rows: (k,
    one quote_literal per key column, the page's rows), k = 1, 2...; fewer than `pages` rows when the
    table ends first."""
    key = [quote_identifier(name) for name in served.key]
    source = f"{quote_identifier(served.schema)}.{quote_identifier(served.name)}"
    picked = ", ".join(f"t.{name} AS _c{i}" for i, name in enumerate(key))
    ordered = ", ".join(f"t.{name}" for name in key)
    names = [f"_c{i}" for i in range(len(key))]

    def after_clause(values: Sequence[str] | None) -> str:
        if values is None:
            return "" if where is None else f"WHERE {where}"
        left = ordered if len(key) == 1 else f"({ordered})"
        right = values[0] if len(values) == 1 else f"({', '.join(values)})"
        return f"WHERE {left} > {right}" + ("" if where is None else f" AND {where}")

    def step(condition: str) -> str:
        if budget is None:
            return (
                f"SELECT {picked}, {size} AS _n FROM {source} t {condition} ORDER BY {ordered} "
                f"OFFSET {size - 1} LIMIT 1"
            )
        widths = " + ".join(_width(served, column) for column in served.names) or "0"
        inner = (
            f"SELECT {picked}, row_number() OVER w AS _n, sum({widths}) OVER w AS _bytes FROM {source} t {condition} "
            f"WINDOW w AS (ORDER BY {ordered}) ORDER BY {ordered} LIMIT {size}"
        )
        within = f"_n = 1 OR _bytes <= {budget}"
        return f"SELECT {', '.join(names)}, _n FROM ({inner}) s WHERE {within} ORDER BY _n DESC LIMIT 1"

    anchor = step(after_clause(after))
    recursive = step(after_clause([f"b.{name}" for name in names]))
    quoted = ", ".join(f"quote_literal({name})" for name in names)
    return (
        f"WITH RECURSIVE bounds AS ((SELECT 1 AS k, * FROM ({anchor}) a) UNION ALL "
        f"(SELECT b.k + 1, n.* FROM bounds b CROSS JOIN LATERAL ({recursive}) n WHERE b.k < {pages})) "
        f"SELECT k, {quoted}, _n FROM bounds ORDER BY k"
    )


def _width(served: Table, name: str) -> str:
    """A value's bytes as stored before compression (octet_length reads a TOASTed value's size from its
    pointer, without fetching it), or pg_column_size for the rest."""
    column = served.column(name)
    assert column is not None
    ref = f"t.{quote_identifier(name)}"
    if column.type.builtin in ("text", "varchar", "bpchar", "bytea"):
        return f"coalesce(octet_length({ref}), 0)"
    if column.type.builtin == "json":
        return f"coalesce(octet_length({ref}::text), 0)"
    return f"coalesce(pg_column_size({ref}), 0)"


def width_sample_sql(served: Table, rows: int) -> str:
    """The raw bytes of the first `rows` rows in storage order, on average: what a row of the table weighs."""
    widths = " + ".join(_width(served, name) for name in served.names)
    source = f"{quote_identifier(served.schema)}.{quote_identifier(served.name)}"
    return f"SELECT avg({widths})::float8 FROM (SELECT * FROM {source} LIMIT {rows}) t"


def count_up_to_sql(served: Table, after: KeyValue | None, up_to: int, where: str | None = None) -> str:
    """Rows after `after` (that `where` keeps), counted no further than `up_to` (a walk of the key's index
    that stops early)."""
    clause = table_clause(served)
    rows = select(literal_column("1")).select_from(clause)
    if where is not None:
        rows = rows.where(literal_column(where))
    if after is not None:
        rows = rows.where(key_after(clause, served.key, after))
    if served.key:
        rows = rows.order_by(*(clause.c[name] for name in served.key))
    return sql_text(select(func.count()).select_from(rows.limit(up_to).subquery("capped")))


def estimate_sql(served: Table, after: KeyValue | None, where: str | None = None) -> str:
    """EXPLAIN of the rows an export reads (after `after`, that `where` keeps): the planner's estimate,
    never a count that reads them."""
    clause = table_clause(served)
    rows = select(literal_column("1")).select_from(clause)
    if where is not None:
        rows = rows.where(literal_column(where))
    if after is not None:
        rows = rows.where(key_after(clause, served.key, after))
    return "EXPLAIN (FORMAT JSON) " + sql_text(rows)


def key_range_sql(served: Table) -> str:
    """The smallest and largest value of an integer key (two index lookups)."""
    clause = table_clause(served)
    key = clause.c[served.key[0]]
    return sql_text(select(func.min(key), func.max(key)))


def validate_key_sql(served: Table) -> str:
    """The key values a request sent (as text, bound parameters) read as their columns' types, each
    returned as the SQL literal PostgreSQL writes for it: a resume value never reaches a page as request text."""
    casts = []
    for i, name in enumerate(served.key, start=1):
        column = served.column(name)
        assert column is not None
        pg_type = f"{quote_identifier(column.type.schema)}.{quote_identifier(column.type.name)}"
        casts.append(f"quote_literal(CAST(CAST(${i} AS text) AS {pg_type}))")
    return "SELECT " + ", ".join(casts)


def copy_statement(query: str, options: Mapping[str, str]) -> str:
    """COPY (query) TO STDOUT with its options (FORMAT, DELIMITER...: the layouts' own constants)."""
    written = ", ".join(f"{name.upper()} '{value.replace(chr(39), chr(39) * 2)}'" for name, value in options.items())
    return f"COPY ({query}) TO STDOUT" + (f" ({written})" if written else "")


async def fetch_uncached(conn: asyncpg.Connection, sql: str) -> list[asyncpg.Record]:
    """Run a statement written once (its values in its text) as an unnamed statement, so it neither
    fills asyncpg's statement cache nor needs a name behind a pooler."""
    prepared = await conn.prepare(sql, name="")
    return await prepared.fetch()


# The ping /healthz runs: one round trip, no table.
PING = "SELECT 1"
