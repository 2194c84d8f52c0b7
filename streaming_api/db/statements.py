"""The SQL an export runs, built with SQLAlchemy Core and compiled once into asyncpg's $n form.

Every value from a request travels as a bound parameter. COPY takes no parameters, so a page's COPY
reads its id range from session settings that the page's range statement sets (bound) just before,
on the same connection.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Text, bindparam, cast, func, literal, select
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql import ClauseElement

from .schema import points

DIALECT = postgresql.asyncpg.dialect(paramstyle="numeric_dollar")

# The id range of the page a COPY exports, handed over in session settings: COPY takes no bound parameters.
AFTER_ID_SETTING = "streaming_api.after_id"
LAST_ID_SETTING = "streaming_api.last_id"
# The page's row count too: rows inserted inside the range since it was found must not push it past a limit.
ROWS_SETTING = "streaming_api.rows"
MAX_ID = 2**63 - 1


@dataclass(frozen=True)
class Statement:
    """A SQLAlchemy statement compiled once into asyncpg's $n form, with its parameter order."""

    sql: str
    names: tuple[str, ...]
    defaults: dict[str, Any]

    def args(self, **values: Any) -> list[Any]:
        merged = {**self.defaults, **values}
        return [merged[name] for name in self.names]


def compile_statement(stmt: ClauseElement) -> Statement:
    compiled = stmt.compile(dialect=DIALECT)
    names = tuple(compiled.positiontup or ())
    return Statement(str(compiled), names, dict(compiled.params))


def page_range_statement() -> Statement:
    """Find the keyset page after after_id (its row count and last id, from the primary key index) and
    store its id range in the session settings the page's COPY reads. Parameters: after_id, page_size."""
    after_id = bindparam("after_id", type_=BigInteger)
    ids = (
        select(points.c.id)
        .where(points.c.id > after_id)
        .order_by(points.c.id)
        .limit(bindparam("page_size", type_=BigInteger))
        .subquery("ids")
    )
    bounds = select(func.count().label("rows"), func.max(ids.c.id).label("last_id")).subquery("bounds")
    stmt = select(
        bounds.c.rows,
        bounds.c.last_id,
        func.set_config(AFTER_ID_SETTING, cast(after_id, Text), False),
        func.set_config(LAST_ID_SETTING, cast(func.coalesce(bounds.c.last_id, after_id), Text), False),
        func.set_config(ROWS_SETTING, cast(bounds.c.rows, Text), False),
    )
    return compile_statement(stmt)


def open_range_statement() -> Statement:
    """Store the range "every id after after_id" for a COPY of all the rows left (/standard without limit)."""
    stmt = select(
        func.set_config(AFTER_ID_SETTING, cast(bindparam("after_id", type_=BigInteger), Text), False),
        func.set_config(LAST_ID_SETTING, str(MAX_ID), False),
        func.set_config(ROWS_SETTING, str(MAX_ID), False),
    )
    return compile_statement(stmt)


def copy_page_sql(columns: Callable[[Any], list[Any]]) -> str:
    """The query a page's COPY exports (asyncpg's copy_from_query wraps it in COPY ... TO STDOUT):
    PostgreSQL writes the bytes itself, the fastest export it has. The id range comes from the session
    settings set just before on the same connection."""
    after_id = cast(func.current_setting(AFTER_ID_SETTING), BigInteger)
    last_id = cast(func.current_setting(LAST_ID_SETTING), BigInteger)
    rows = cast(func.current_setting(ROWS_SETTING), BigInteger)
    query = (
        select(*columns(points)).where(points.c.id > after_id, points.c.id <= last_id).order_by(points.c.id).limit(rows)
    )
    # Only constants of our own are inlined here (setting names, separators); no value from a request.
    return str(query.compile(dialect=DIALECT, compile_kwargs={"literal_binds": True}))


# Rows after after_id, counted no further than `up_to` (an index-only walk that stops early).
COUNT_UP_TO = compile_statement(
    select(func.count()).select_from(
        select(literal(1))
        .select_from(points)
        .where(points.c.id > bindparam("after_id", type_=BigInteger))
        .order_by(points.c.id)
        .limit(bindparam("up_to", type_=BigInteger))
        .subquery("capped")
    )
)
