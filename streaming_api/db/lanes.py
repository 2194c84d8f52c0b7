"""Pool connections handed out by priority, so a new client's first page never queues behind old streams;
behind a transaction pooler, each one inside a transaction of its own."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol, TypeVar

import asyncpg

from .statements import PING

# A unit of work that failed may leave its transaction open: how long to try to roll it back.
ROLLBACK_SECONDS = 1.0
# A transaction's first statement that waits this long is waiting for a server connection (a pooler with
# every one taken): the snapshots kept only for a resume give theirs up (db.snapshots), one at a time.
MAKE_ROOM_AFTER_SECONDS = 0.2

T = TypeVar("T")
MakeRoom = Callable[[], Awaitable[bool]]


async def patiently(step: Awaitable[T], make_room: MakeRoom | None) -> T:
    """`step`; each time it has waited another MAKE_ROOM_AFTER_SECONDS, `make_room()`."""
    if make_room is None:
        return await step
    task = asyncio.ensure_future(step)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=MAKE_ROOM_AFTER_SECONDS)
            if done:
                return task.result()
            await make_room()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task


class Units(Protocol):
    """Where an export's units of work run: the shared Lanes, or one export's own (db.snapshot_units.HeldLane)."""

    def connection(self, priority: int) -> AbstractAsyncContextManager[asyncpg.Connection]: ...

    def transaction(self, priority: int, long: bool = False) -> AbstractAsyncContextManager[asyncpg.Connection]: ...

    async def copy(self, priority: int, statement: str, output: Output, long: bool = False) -> str: ...


Output = Callable[[bytes], Awaitable[None]]


async def copy_out(conn: asyncpg.Connection, statement: str, output: Output) -> str:
    """A COPY ... TO STDOUT statement run as written, its output handed to `output` as it arrives; its
    status ("COPY <rows>"). (asyncpg's copy_from_query would rewrite any `$n` in a statement given
    arguments; a page has none, and is written whole by db.statements.)"""
    return await conn._copy_out(statement, output, None)


class Lanes:
    """Pool connections handed out by priority: a stream's first page and /healthz (FIRST) go before the
    later pages of streams already running (LATER), and half the pool is kept for FIRST alone, so a new
    client's first bytes (and a health check) never queue behind the streams already running."""

    FIRST, LATER = 0, 1

    def __init__(
        self, pool: asyncpg.Pool, capacity: int, unit_begin: str | None = None, long_timeout: float = 600.0
    ) -> None:
        self.pool = pool
        # Behind a transaction pooler: what opens each unit of work's transaction (db.pool.Connected).
        self.unit_begin = unit_begin
        # statement_timeout for a statement that is the whole export (request_deadline), in ms.
        self.long_timeout = long_timeout
        # What gives server connections back when a transaction's start waits for one (db.snapshots).
        self.make_room: MakeRoom | None = None
        self._long_timeout_ms = max(1, round(long_timeout * 1000))
        self._free = capacity
        # LATER may not take the last `_reserved` free connections.
        self._reserved = capacity // 2
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._arrivals = itertools.count()

    @property
    def free(self) -> int:
        """Connections no request holds right now."""
        return self._free

    @contextlib.asynccontextmanager
    async def connection(self, priority: int) -> AsyncIterator[asyncpg.Connection]:
        """A connection for one unit of work (a page, a count, a ping), given back when it is done."""
        async with self._unit(priority, self.unit_begin) as conn:
            yield conn

    @contextlib.asynccontextmanager
    async def transaction(self, priority: int, long: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """A connection for a unit of work in a transaction of its own: a cursor's, or (`long`) one statement
        that is a whole export, allowed request_deadline rather than statement_timeout."""
        begin = self.unit_begin or "BEGIN"
        if long:
            begin += f"; SET LOCAL statement_timeout = {self._long_timeout_ms}"
        async with self._unit(priority, begin) as conn:
            yield conn

    async def copy(self, priority: int, statement: str, output: Output, long: bool = False) -> str:
        """One COPY as a unit of work (`long`: a whole export's, in a transaction of request_deadline)."""
        async with self.transaction(priority, long=True) if long else self.connection(priority) as conn:
            return await copy_out(conn, statement, output)

    def reading(self, snapshot: str) -> Reading:
        """These lanes, every unit of work in a transaction of its own that imports `snapshot` (an id that
        db.snapshots holds, or checked by it)."""
        return Reading(self, snapshot)

    @contextlib.asynccontextmanager
    async def _unit(self, priority: int, begin: str | None) -> AsyncIterator[asyncpg.Connection]:
        await self._take(priority)
        try:
            async with self.pool.acquire() as conn:
                if begin is None:
                    yield conn
                else:
                    async with transaction_on(conn, begin, self.make_room):
                        yield conn
        finally:
            self._free += 1
            self._dispatch()

    async def ping(self, within_seconds: float) -> None:
        """One round trip to the database, first in line: a health check never queues behind exports."""
        async with asyncio.timeout(within_seconds), self.connection(self.FIRST) as conn:
            await conn.execute(PING)

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


class Reading:
    """Lanes whose units of work all read one exported snapshot (Lanes.reading). Straight to PostgreSQL a
    page is still one round trip: its COPY rides in one query string behind the SETs that import the
    snapshot, which PostgreSQL runs as one implicit transaction; any other unit is a transaction of its own
    (BEGIN ... COMMIT)."""

    def __init__(self, lanes: Lanes, snapshot: str) -> None:
        self._lanes = lanes
        self._begin = snapshot_begin(snapshot, lanes.unit_begin)
        self._prefix: str | None = None
        if lanes.unit_begin is None:
            imports = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT"
            self._prefix = f"{imports} '{snapshot}'; "

    async def copy(self, priority: int, statement: str, output: Output, long: bool = False) -> str:
        if self._prefix is None or long:
            async with self.transaction(priority, long) as conn:
                return await copy_out(conn, statement, output)
        async with self._lanes._unit(priority, None) as conn:
            return await copy_out(conn, self._prefix + statement, output)

    def connection(self, priority: int) -> AbstractAsyncContextManager[asyncpg.Connection]:
        return self._lanes._unit(priority, self._begin)

    def transaction(self, priority: int, long: bool = False) -> AbstractAsyncContextManager[asyncpg.Connection]:
        begin = self._begin
        if long:
            begin += f"; SET LOCAL statement_timeout = {self._lanes._long_timeout_ms}"
        return self._lanes._unit(priority, begin)


@contextlib.asynccontextmanager
async def transaction_on(
    conn: asyncpg.Connection, begin: str, make_room: MakeRoom | None = None
) -> AsyncIterator[None]:
    """BEGIN (with its SET LOCALs) ... COMMIT in two simple-protocol round trips; rolled back on failure,
    so the pool gets the connection back clean (asyncpg would roll back too, but report it as an error)."""
    await patiently(conn.execute(begin), make_room)
    try:
        yield
    except BaseException:
        await rollback_quietly(conn)
        raise
    await conn.execute("COMMIT")


async def rollback_quietly(conn: asyncpg.Connection) -> None:
    """ROLLBACK, within ROLLBACK_SECONDS, whatever it meets (a connection already lost, say)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(ROLLBACK_SECONDS):
            await conn.execute("ROLLBACK")


def snapshot_begin(snapshot: str | None, unit_begin: str | None) -> str:
    """The BEGIN of a transaction that reads a snapshot: `snapshot` (an exported id, imported), or its own
    (None); behind a pooler, with the SET LOCALs each unit's transaction starts with."""
    begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
    if snapshot is not None:
        begin += f"; SET TRANSACTION SNAPSHOT '{snapshot}'"
    return begin + (unit_begin or "BEGIN").removeprefix("BEGIN")
