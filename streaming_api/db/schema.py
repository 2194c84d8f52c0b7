"""The points table (SQLAlchemy Core) and its seeding: deterministic rows loaded with COPY."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import TypeVar

import asyncpg
from sqlalchemy import BigInteger, CheckConstraint, Column, DateTime, Float, MetaData, Table, Text
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateTable

metadata = MetaData()

# The demo table's columns, in order. `id` is its key.
COLUMNS: tuple[str, ...] = ("id", "x", "y", "label", "value", "recorded_at")

_TYPES = {
    "id": BigInteger,
    "x": Float(precision=53),
    "y": Float(precision=53),
    "label": Text,
    "value": Float(precision=53),
    "recorded_at": DateTime(timezone=True),
}

points = Table(
    "points",
    metadata,
    *(Column(name, _TYPES[name], primary_key=name == "id", autoincrement=False, nullable=False) for name in COLUMNS),
    # Finite doubles only: every format writes numbers bare, and NaN or Infinity is not a JSON number.
    *(
        CheckConstraint(f"{name} NOT IN ('NaN', 'Infinity', '-Infinity')", name=f"points_{name}_finite")
        for name in ("x", "y", "value")
    ),
)

# Every 101st row carries a label that needs escaping in every format.
TRICKY_LABEL = 'Zürich, "north"\tline\ntwo \\ ✓'
TRICKY_EVERY = 101
VALUE_SEED = 20260101
EPOCH = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

T = TypeVar("T")

CREATE_TABLE = str(CreateTable(points, if_not_exists=True).compile(dialect=postgresql.dialect()))


# The demo table's columns as PostgreSQL names their types: a `points` of another shape is not ours.
SHAPE = (
    ("id", "bigint"),
    ("x", "double precision"),
    ("y", "double precision"),
    ("label", "text"),
    ("value", "double precision"),
    ("recorded_at", "timestamp with time zone"),
)


class NotTheDemoTable(Exception):
    """A demo table's name held by a table of another shape: the user's own, which seeding must never overwrite."""


async def ensure_table(conn: asyncpg.Connection, name: str, shape: tuple[tuple[str, str], ...], create: str) -> None:
    """Create a demo table if it is missing; refuse (NotTheDemoTable) if a table of that name has another shape."""
    found = tuple(
        (record["attname"], record["type"])
        for record in await conn.fetch(
            "SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute "
            "WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            name,
        )
    )
    if found and found != shape:
        described = ", ".join(f"{column} {kind}" for column, kind in found)
        raise NotTheDemoTable(
            f"the {name} table in this database is not the demo table (its columns: {described[:300]})"
        )
    if not found:
        await conn.execute(create)


async def ensure_schema(conn: asyncpg.Connection) -> None:
    """Create the points table if it is missing; refuse (NotTheDemoTable) if a `points` of another shape is there."""
    await ensure_table(conn, points.name, SHAPE, CREATE_TABLE)


async def row_count(conn: asyncpg.Connection, name: str = points.name) -> int:
    """Rows in a demo table, or 0 when it does not exist yet."""
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", name)
    if not exists:
        return 0
    return await conn.fetchval(f"SELECT count(*) FROM {name}")


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


@contextlib.asynccontextmanager
async def reloading(conn: asyncpg.Connection, name: str) -> AsyncIterator[None]:
    """A demo table emptied and loaded again in one transaction (the block loads it), then vacuumed."""
    async with conn.transaction():
        # Durability of a bulk reload is not worth a flush per commit; the load is all or nothing.
        await conn.execute("SET LOCAL synchronous_commit TO OFF")
        # A bulk load of millions of rows is not a query to cut short by the service's statement_timeout.
        await conn.execute("SET LOCAL statement_timeout TO 0")
        await conn.execute(f"TRUNCATE {name}")
        yield
    # VACUUM sets the visibility map, so the page plan's walks of the primary key are index-only scans.
    await conn.execute(f"VACUUM (ANALYZE) {name}")


async def seed(
    conn: asyncpg.Connection,
    rows: int,
    progress: Callable[[int], None] | None = None,
    batch: int = 50_000,
) -> None:
    """Make the table hold exactly rows 1..rows, loaded with COPY, in one transaction."""
    await ensure_schema(conn)
    source = generate_rows(rows)
    async with reloading(conn, points.name):
        done = 0
        while done < rows:
            chunk = [next(source) for _ in range(min(batch, rows - done))]
            await _until_lost(conn, conn.copy_records_to_table(points.name, records=chunk, columns=list(COLUMNS)))
            done += len(chunk)
            if progress:
                progress(done)


async def _until_lost(conn: asyncpg.Connection, work: Awaitable[T]) -> T:
    """`work` on `conn`, ended when the connection is: asyncpg's COPY waits forever to write to a server that
    died while the socket was full (its flow control never resumes), as when PostgreSQL PANICs on a full disk."""
    lost = asyncio.get_running_loop().create_future()

    def on_lost(_conn: object) -> None:
        if not lost.done():
            lost.set_result(None)

    task = asyncio.ensure_future(work)
    # Its outcome may be dropped (the connection went first): never a "never retrieved" warning.
    task.add_done_callback(lambda done: done.cancelled() or done.exception())
    conn.add_termination_listener(on_lost)
    try:
        await asyncio.wait((task, lost), return_when=asyncio.FIRST_COMPLETED)
    finally:
        conn.remove_termination_listener(on_lost)
        if not task.done():
            task.cancel()
            # asyncpg ends its COPY (telling the server, if it is there) before the connection is used again.
            await asyncio.wait((task,))
    if task.cancelled():  # here, because the connection ended first
        raise asyncpg.ConnectionDoesNotExistError("the connection to the database was lost during COPY")
    return task.result()
