"""Exports that read one moment of the database: a snapshot held open for each of them.

/chunked runs an export as many statements (pages, plans, a count). To have every one of them see what
one COPY at the export's start would have seen, the export takes a holder: a connection of its own in a
REPEATABLE READ transaction that exports its snapshot (`pg_export_snapshot()`). Straight to PostgreSQL
the export's statements run on the shared lanes, in parallel, each in a transaction that imports it (`SET
TRANSACTION SNAPSHOT`, db.lanes.Reading), and the holder itself reads no table, so it holds no lock.
Behind a transaction pooler they run on the holder's connection, one at a time (HeldLane): an export then
keeps one server connection and never waits for a second while it does, so exports cannot hold up one
another's pages for ever. A snapshot lives on the server that exported it: an export reads the primary
or one replica, never both.

When its export ends a holder is kept `grace` seconds, so a resume (`snapshot=`) continues in it, on any
worker of the same server: the resume's own holder imports it and exports it again under an id of its
own. It is kept even when the export ended whole: the server has then written the last bytes, not seen
them arrive, and a cut in the last socket buffer's worth is a cut all the same. At most `limit` holders
are open per process; a new export that finds no room, or any statement that waits for its connection
(a pooler with every server connection taken), lets go of those kept only for a resume: the ones whose
export ended whole first, then the oldest.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import asyncpg

from .lanes import patiently
from .pool import close_pool, create_pool

log = logging.getLogger(__name__)

# What pg_export_snapshot() returns (PostgreSQL 13 and later): nothing else is ever written into SQL.
SNAPSHOT_ID = re.compile(r"[0-9A-F]{8}-[0-9A-F]{8}-[0-9]{1,10}")
ROLLBACK_SECONDS = 1.0
# How long a statement on a holder's connection may run on after its caller was cancelled.
SETTLE_SECONDS = 1.0


class SnapshotGone(Exception):
    """The snapshot a request names is not held any more (its grace period passed), or not on this server."""


# What PostgreSQL says when a transaction imports a snapshot no transaction holds (any more).
NOT_HELD = (asyncpg.UndefinedObjectError, asyncpg.InvalidParameterValueError)


@dataclass
class Held:
    """A snapshot held open: its id, its holder's connection, and when its grace period ends."""

    id: str
    conn: asyncpg.Connection
    until: float | None = None
    # Whether its export ended whole (let go before those of cut exports), and whether a statement failed
    # or was cancelled in its transaction (then it holds nothing a resume could continue in).
    whole: bool = False
    broken: bool = False


class HeldLane:
    """One export's units of work on its holder's connection (behind a transaction pooler), one at a time:
    every one of them inside the holder's transaction, so in its snapshot. The same calls as db.lanes.Lanes
    (db.lanes.Units)."""

    def __init__(self, held: Held, long_timeout: float) -> None:
        self._held = held
        self._conn = cast(asyncpg.Connection, _Settling(held.conn, held))
        self._lock = asyncio.Lock()
        self._long_timeout_ms = max(1, round(long_timeout * 1000))
        self._long = False

    @contextlib.asynccontextmanager
    async def connection(self, priority: int) -> AsyncIterator[asyncpg.Connection]:
        async with self._lock:
            yield self._conn

    @contextlib.asynccontextmanager
    async def transaction(self, priority: int, long: bool = False) -> AsyncIterator[asyncpg.Connection]:
        """The holder's transaction is the unit's; `long` (one statement that is a whole export) lifts the
        statement's time limit to request_deadline for the rest of it."""
        async with self.connection(priority) as conn:
            if long and not self._long:
                await conn.execute(f"SET LOCAL statement_timeout = {self._long_timeout_ms}")
                self._long = True
            yield conn


class _Settling:
    """The holder's connection (or a statement prepared on it) as a unit sees it. A statement whose caller
    is cancelled (the client went away, a count no longer wanted) runs on to its end, up to
    SETTLE_SECONDS, for a cancelled statement aborts the transaction, and a resume needs its snapshot. One
    that fails, or still runs then and is cancelled, leaves the snapshot broken (let go, never kept)."""

    def __init__(self, target: Any, held: Held) -> None:
        self._target = target
        self._held = held

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        async def settled(*args: Any, **kwargs: Any) -> Any:
            running = asyncio.ensure_future(attr(*args, **kwargs))
            try:
                result = await asyncio.shield(running)
            except asyncio.CancelledError:
                done, _ = await asyncio.wait({running}, timeout=SETTLE_SECONDS)
                if not done or running.cancelled() or running.exception() is not None:
                    self._held.broken = True
                    running.cancel()
                raise
            except BaseException:
                self._held.broken = True
                raise
            prepared = isinstance(result, asyncpg.prepared_stmt.PreparedStatement)
            return _Settling(result, self._held) if prepared else result

        return settled


class Snapshots:
    """The snapshots one source's exports hold, over a pool of holder connections of their own."""

    def __init__(self, url: str, limit: int, grace: float, statement_timeout: float) -> None:
        self._url = url
        self._limit = limit
        self._grace = grace
        self._statement_timeout = statement_timeout
        self._pool: asyncpg.Pool | None = None
        # Behind a pooler: the SET LOCALs each unit's transaction starts with (db.pool.Connected).
        self._unit_begin: str | None = None
        self._connecting: asyncio.Lock = asyncio.Lock()
        # Held for an export running now, held for a grace period (oldest first), and being opened.
        self._active: dict[str, Held] = {}
        self._graced: deque[Held] = deque()
        self._opening = 0
        self._expiry: asyncio.Task[None] | None = None

    @property
    def held(self) -> int:
        return len(self._active) + len(self._graced) + self._opening

    async def _holders(self) -> asyncpg.Pool:
        async with self._connecting:
            if self._pool is None:
                connected = await create_pool(self._url, 0, self._limit, self._statement_timeout)
                self._pool, self._unit_begin = connected.pool, connected.unit_begin
        return self._pool

    async def hold(self, existing: str | None = None) -> Held:
        """A new snapshot of the database now, or (a resume) the one `existing` names, held under an id of
        its own; SnapshotGone if `existing` is no longer held anywhere on this server."""
        if existing is not None and not SNAPSHOT_ID.fullmatch(existing):
            raise SnapshotGone(existing)
        while self.held >= self._limit and self._graced:
            await self.make_room()
        self._opening += 1
        try:
            held = await patiently(self._open(existing), self.make_room)
        finally:
            self._opening -= 1
        self._active[held.id] = held
        return held

    async def _open(self, existing: str | None) -> Held:
        pool = await self._holders()
        conn = await pool.acquire()
        try:
            begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY"
            if existing is not None:
                begin += f"; SET TRANSACTION SNAPSHOT '{existing}'"
            if self._unit_begin is not None:
                begin += self._unit_begin.removeprefix("BEGIN")
            try:
                await conn.execute(begin)
            except NOT_HELD:
                raise SnapshotGone(existing) from None
            snapshot = await conn.fetchval("SELECT pg_export_snapshot()")
        except BaseException:
            await self._release(conn)
            raise
        return Held(snapshot, conn)

    async def done(self, held: Held, whole: bool) -> None:
        """The export ended: keep its snapshot `grace` seconds for a resume, or let it go now (no grace, a
        broken one, or a new export waiting for room)."""
        self._active.pop(held.id, None)
        if self._grace <= 0 or held.broken or self.held >= self._limit + 1:
            await self._let_go(held)
            return
        held.until = time.monotonic() + self._grace
        held.whole = whole
        self._graced.append(held)
        if self._expiry is None or self._expiry.done():
            self._expiry = asyncio.ensure_future(self._expire())

    async def make_room(self) -> bool:
        """Let go of one snapshot kept only for a resume, for work that waits for its connection: the first
        whose export ended whole, else the oldest. False when none is kept."""
        if not self._graced:
            return False
        chosen = next((kept for kept in self._graced if kept.whole), self._graced[0])
        self._graced.remove(chosen)
        await self._let_go(chosen)
        return True

    async def _expire(self) -> None:
        """Let go of each snapshot kept for a resume once its grace period is over."""
        while self._graced:
            wait = (self._graced[0].until or 0) - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            await self._let_go(self._graced.popleft())

    async def _let_go(self, held: Held) -> None:
        await self._release(held.conn)

    async def _release(self, conn: asyncpg.Connection) -> None:
        assert self._pool is not None
        with contextlib.suppress(Exception):
            async with asyncio.timeout(ROLLBACK_SECONDS):
                await conn.execute("ROLLBACK")
        await self._pool.release(conn)

    async def close(self) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry
        for held in [*self._active.values(), *self._graced]:
            with contextlib.suppress(Exception):
                await self._let_go(held)
        self._active.clear()
        self._graced.clear()
        if self._pool is not None:
            await close_pool(self._pool)
