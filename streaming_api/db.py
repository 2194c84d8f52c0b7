"""The points table (SQLAlchemy Core), the asyncpg pool, statement compilation and seeding."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import heapq
import itertools
import random
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiohttp import web
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    MetaData,
    Table,
    Text,
    bindparam,
    cast,
    func,
    select,
)
from sqlalchemy.dialects import postgresql
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
    # Finite doubles only: every format writes numbers bare, and NaN or Infinity is not a JSON number.
    *(
        CheckConstraint(f"{name} NOT IN ('NaN', 'Infinity', '-Infinity')", name=f"points_{name}_finite")
        for name in ("x", "y", "value")
    ),
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


# The id range of the page a COPY exports, handed over in session settings: COPY takes no bound parameters.
AFTER_ID_SETTING = "streaming_api.after_id"
LAST_ID_SETTING = "streaming_api.last_id"
# The page's row count too: rows inserted inside the range since it was found must not push it past a limit.
ROWS_SETTING = "streaming_api.rows"
MAX_ID = 2**63 - 1


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
    return str(query.compile(dialect=_DIALECT, compile_kwargs={"literal_binds": True}))


# --- pool -------------------------------------------------------------------------------------


async def create_pool(url: str, min_size: int, max_size: int, statement_timeout: float | None = None) -> asyncpg.Pool:
    # Output must not depend on the server's time zone: every format writes UTC.
    server_settings = {"application_name": "streaming_api", "TimeZone": "UTC"}
    if statement_timeout is not None:
        # Enforced by PostgreSQL itself, so a stuck query ends even if the client side is blocked.
        server_settings["statement_timeout"] = str(max(1, round(statement_timeout * 1000)))
    return await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, server_settings=server_settings, reset=_keep_session
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """On release, skip asyncpg's default RESET ALL / UNLISTEN / CLOSE ALL round trip (one per page).

    Nothing here leaves such state behind: no LISTEN, cursors or advisory locks, and the only settings
    a page sets are its id range, which the next page overwrites. (asyncpg still ends any open
    transaction itself.)"""


class Lanes:
    """Pool connections handed out by priority: a stream's first page and /healthz go before the later
    pages of streams already running, and a few connections are kept for them alone, so a new client's
    first bytes (and a health check) never queue behind the streams already running."""

    FIRST, LATER = 0, 1

    def __init__(self, pool: asyncpg.Pool, capacity: int) -> None:
        self.pool = pool
        self._free = capacity
        # Later pages may not take the last `_reserved` free connections.
        self._reserved = capacity // 2
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    @contextlib.asynccontextmanager
    async def connection(self, priority: int) -> AsyncIterator[asyncpg.Connection]:
        await self._take(priority)
        try:
            async with self.pool.acquire() as conn:
                yield conn
        finally:
            self._free += 1
            self._dispatch()

    def _may_take(self, priority: int) -> bool:
        return self._free > (0 if priority == self.FIRST else self._reserved)

    async def _take(self, priority: int) -> None:
        turn = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._arrivals), turn))
        self._dispatch()  # at once when this request may take a free connection
        try:
            await turn
        except asyncio.CancelledError:
            # Still waiting: the cancelled future is skipped by _dispatch. Handed a connection just as we
            # were cancelled: pass it on.
            if not turn.cancelled():
                self._free += 1
                self._dispatch()
            raise

    def _dispatch(self) -> None:
        """Hand free connections to the waiters, best priority first, as far as each may take one."""
        while self._waiting:
            priority, _, turn = self._waiting[0]
            if turn.done():
                heapq.heappop(self._waiting)
                continue
            if not self._may_take(priority):
                return
            heapq.heappop(self._waiting)
            self._free -= 1
            turn.set_result(None)


async def ping(lanes: Lanes, within_seconds: float = 2.0) -> None:
    # First in line for a connection: a health check must not queue behind running exports.
    async with asyncio.timeout(within_seconds), lanes.connection(Lanes.FIRST) as conn:
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
        # A bulk load of millions of rows is not a query to cut short by the service's statement_timeout.
        await conn.execute("SET LOCAL statement_timeout TO 0")
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
# Not every PostgresError: a syntax error or a missing column is a bug (500), not an outage (503).
DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,  # includes QueryCanceledError (statement_timeout), admin shutdown
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)

POOL = web.AppKey("pool", asyncpg.Pool)
LANES = web.AppKey("lanes", Lanes)
