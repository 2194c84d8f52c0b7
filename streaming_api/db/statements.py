"""The SQL an export runs, built with SQLAlchemy Core and compiled once into asyncpg's $n form.

Every page is one statement, so an export works behind PgBouncer in transaction pooling mode, where two
statements in a row may run on different server connections: no session state. The page plan (where
each page ends) is an ordinary query with bound parameters.
A page is a COPY, which takes no bound parameters: its three bounds are integers the plan produced,
written into the statement by `Statement.inline`, which accepts Python ints and nothing else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Integer, Select, bindparam, cast, func, literal, literal_column, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import ClauseElement

from .schema import points

DIALECT = postgresql.asyncpg.dialect(paramstyle="numeric_dollar")
MAX_ID = 2**63 - 1
_PLACEHOLDER = re.compile(r"\$([0-9]+)\b")


@dataclass(frozen=True)
class Statement:
    """A SQLAlchemy statement compiled once into asyncpg's $n form, with its parameter order."""

    sql: str
    names: tuple[str, ...]
    defaults: dict[str, Any]

    def args(self, **values: Any) -> list[Any]:
        merged = {**self.defaults, **values}
        return [merged[name] for name in self.names]

    def inline(self, **values: int) -> str:
        """The SQL with each $n replaced by its integer value, for statements that take no parameters (COPY).
        Only ints pass (never text, never a bool): nothing from a request reaches the SQL as text."""
        args = self.args(**values)
        for name, value in zip(self.names, args, strict=True):
            if type(value) is not int:
                raise TypeError(f"{name}: only an int may be written into SQL, got {type(value).__name__}")
        return _PLACEHOLDER.sub(lambda match: str(args[int(match.group(1)) - 1]), self.sql)


def compile_statement(stmt: ClauseElement) -> Statement:
    compiled = stmt.compile(dialect=DIALECT)
    names = tuple(compiled.positiontup or ())
    statement = Statement(str(compiled), names, dict(compiled.params))
    assert len(set(_PLACEHOLDER.findall(statement.sql))) == len(names), statement.sql
    return statement


def plan_statement() -> Statement:
    """The upper bounds of the next `pages` pages after `after_id`, every `size` rows. Each bound is found
    from the one before by a short walk of the primary key index (a recursive query), so a plan of many
    pages is one statement that reads each index entry once. A NULL bound: the table ends before it.
    Rows: (k, id), k = 1..pages, in order."""
    bounds = select(
        literal(0, Integer).label("k"), cast(bindparam("after_id", type_=BigInteger), BigInteger).label("id")
    ).cte("bounds", recursive=True)
    next_bound = (
        select(points.c.id)
        .where(points.c.id > bounds.c.id)
        .order_by(points.c.id)
        .offset(bindparam("size", type_=BigInteger) - 1)
        .limit(1)
        .scalar_subquery()
    )
    bounds = bounds.union_all(
        select(bounds.c.k + 1, next_bound).where(
            bounds.c.k < bindparam("pages", type_=Integer), bounds.c.id.is_not(None)
        )
    )
    return compile_statement(select(bounds.c.k, bounds.c.id).where(bounds.c.k > 0).order_by(bounds.c.k))


def bound_page(query: Select) -> Select:
    """A page's bounds on a query over the points table: after_id < id <= last_id, in id order, at most
    `rows` rows (rows inserted inside the range since it was planned never push it past a limit)."""
    return (
        query.where(
            points.c.id > bindparam("after_id", type_=BigInteger),
            points.c.id <= bindparam("last_id", type_=BigInteger),
        )
        .order_by(points.c.id)
        .limit(bindparam("rows", type_=BigInteger))
    )


def page_statement(query: Callable[[Callable[[Select], Select]], Select]) -> Statement:
    """The statement a page's COPY exports (asyncpg's copy_from_query wraps it in COPY ... TO STDOUT):
    PostgreSQL writes the bytes itself, the fastest export it has. `query` builds it from bound_page."""
    return compile_statement(query(bound_page))


def _count_up_to() -> Select:
    """Rows after after_id, counted no further than `up_to` (an index-only walk that stops early)."""
    return select(func.count()).select_from(
        select(literal(1))
        .select_from(points)
        .where(points.c.id > bindparam("after_id", type_=BigInteger))
        .order_by(points.c.id)
        .limit(bindparam("up_to", type_=BigInteger))
        .subquery("capped")
    )


COUNT_UP_TO = compile_statement(_count_up_to())


def table_stats_statement() -> Statement:
    """What an estimate of an export's rows rests on: the table's row estimate (pg_class.reltuples, kept by
    ANALYZE and autovacuum) and its smallest and largest ids (two index lookups)."""
    reltuples = literal_column(f"(SELECT reltuples FROM pg_class WHERE oid = '{points.name}'::regclass)")
    return compile_statement(
        select(
            cast(reltuples, BigInteger).label("estimated_total"),
            select(func.min(points.c.id)).scalar_subquery().label("min_id"),
            select(func.max(points.c.id)).scalar_subquery().label("max_id"),
        )
    )


# The ping /healthz runs: one round trip, no table.
PING = str(select(literal_column("1")).compile(dialect=DIALECT))
