"""The points table (SQLAlchemy Core), the asyncpg pool, statement compilation and seeding."""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import web
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    MetaData,
    Table,
    Text,
    bindparam,
    func,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.schema import CreateTable
from sqlalchemy.sql import ClauseElement

metadata = MetaData()

points = Table(
    "points",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("x", Float(precision=53), nullable=False),
    Column("y", Float(precision=53), nullable=False),
    Column("label", Text, nullable=False),
    Column("value", Float(precision=53), nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)
COLUMNS: tuple[str, ...] = tuple(c.name for c in points.columns)

_DIALECT = postgresql.asyncpg.dialect(paramstyle="numeric_dollar")

# Every 101st row carries a label that needs escaping in every format.
TRICKY_LABEL = 'Zürich, "north"\tline\ntwo \\ ✓'
TRICKY_EVERY = 101
VALUE_SEED = 20260101
EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


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
    compiled = stmt.compile(dialect=_DIALECT)
    names = tuple(compiled.positiontup or ())
    return Statement(str(compiled), names, dict(compiled.params))


def page_statement(render_line: Callable[[Any], Any], separator: str) -> Statement:
    """One keyset page, rendered and joined by PostgreSQL: (rows, last_id, body as UTF-8 bytes).

    The body comes back as bytea so asyncpg hands over bytes: no decode and re-encode in Python.

    Parameters: after_id, and page_size (NULL means no limit, for /standard's single query).
    """
    page = (
        select(*points.columns)
        .where(points.c.id > bindparam("after_id", type_=BigInteger))
        .order_by(points.c.id)
        .limit(bindparam("page_size", type_=BigInteger))
        .subquery("page")
    )
    stmt = select(
        func.count().label("rows"),
        func.max(page.c.id).label("last_id"),
        func.convert_to(func.string_agg(render_line(page), aggregate_order_by(separator, page.c.id)), "UTF8").label(
            "body"
        ),
    ).select_from(page)
    return compile_statement(stmt)


# --- pool -------------------------------------------------------------------------------------


async def create_pool(url: str, min_size: int, max_size: int) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        # Output must not depend on the server's time zone: every format writes UTC.
        server_settings={"application_name": "streaming_api", "TimeZone": "UTC"},
    )


async def ping(pool: asyncpg.Pool, within_seconds: float = 2.0) -> None:
    async with asyncio.timeout(within_seconds), pool.acquire() as conn:
        await conn.fetchval("SELECT 1")


# --- schema and seeding -----------------------------------------------------------------------

CREATE_TABLE = str(CreateTable(points, if_not_exists=True).compile(dialect=_DIALECT))


async def ensure_schema(conn: asyncpg.Connection) -> None:
    await conn.execute(CREATE_TABLE)


async def row_count(conn: asyncpg.Connection) -> int:
    """Rows in the table, or 0 when it does not exist yet."""
    exists = await conn.fetchval("SELECT to_regclass('points') IS NOT NULL")
    if not exists:
        return 0
    return await conn.fetchval(compile_statement(select(func.count()).select_from(points)).sql)


def generate_rows(count: int, start: int = 1) -> Iterator[tuple]:
    """Rows start..count as tuples in column order. Deterministic: row i is the same whatever count is."""
    rng = random.Random(VALUE_SEED)
    for _ in range(1, start):
        rng.random()
    for i in range(start, count + 1):
        label = TRICKY_LABEL if i % TRICKY_EVERY == 0 else f"point-{i}"
        yield (
            i,
            float((i - 1) % 1000),
            float((i - 1) // 1000),
            label,
            rng.random() * 100.0,
            EPOCH + dt.timedelta(seconds=i),
        )


async def seed(
    conn: asyncpg.Connection,
    rows: int,
    progress: Callable[[int], None] | None = None,
    batch: int = 50_000,
) -> None:
    """Make the table hold exactly rows 1..rows, loaded with COPY, in one transaction."""
    await ensure_schema(conn)
    source = generate_rows(rows)
    async with conn.transaction():
        # Durability of a bulk reload is not worth a flush per commit; the load is all or nothing.
        await conn.execute("SET LOCAL synchronous_commit TO OFF")
        await conn.execute(f"TRUNCATE {points.name}")
        done = 0
        while done < rows:
            chunk = [next(source) for _ in range(min(batch, rows - done))]
            await conn.copy_records_to_table(points.name, records=chunk, columns=list(COLUMNS))
            done += len(chunk)
            if progress:
                progress(done)
    await conn.execute(f"ANALYZE {points.name}")


# What "the database is unavailable" looks like from asyncpg: refused or lost connections,
# server-side errors, and pool or query time-outs.
DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    OSError,
    asyncio.TimeoutError,
)

POOL = web.AppKey("pool", asyncpg.Pool)
