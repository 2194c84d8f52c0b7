"""Exports that read one moment of the database: a snapshot held open for each of them.

/chunked runs an export as many statements (pages, plans, a count). To have every one of them see what
one COPY at the export's start would have seen, the export takes a holder: a connection of its own whose
REPEATABLE READ transaction takes the snapshot and exports it (`pg_export_snapshot()`).

Straight to PostgreSQL (db.snapshot_units.Opening) the export's first statement runs on the holder, in
one query with the transaction that takes the snapshot: that query exports the snapshot first and names it in a NOTICE
(a COPY's query returns no rows, and the name must reach the response's headers with the first rows),
then runs the statement inside a savepoint. The first rows wait for one backend and one round trip, as
without a snapshot. Rolling the savepoint back afterwards, off the first rows' path, lets go of the locks
the statement took (the holder keeps none while it waits); every later statement runs on the shared
lanes, in parallel, each importing the snapshot (`SET TRANSACTION SNAPSHOT`, db.lanes.Reading).

Behind a transaction pooler the export runs every statement on its holder's connection, one at a time
(db.snapshot_units.HeldLane): it then keeps one server connection and never waits for a second while it does, so exports
cannot hold up one another's pages for ever. A snapshot lives on the
server that exported it: an export reads the primary or one replica, never both.

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
import logging
import re
import time
from collections import deque
from dataclasses import dataclass

import asyncpg

from .lanes import copy_out, patiently, rollback_quietly, snapshot_begin
from .pool import close_pool, create_pool

log = logging.getLogger(__name__)

# What pg_export_snapshot() returns (PostgreSQL 13 and later): nothing else is ever written into SQL.
SNAPSHOT_ID = re.compile(r"[0-9A-F]{8}-[0-9A-F]{8}-[0-9]{1,10}")
EXPORT = "SELECT pg_export_snapshot()"
# How an opening query's NOTICE names the snapshot it exported.
NAMED_PREFIX = "streaming_api snapshot "


async def _dropped(data: bytes) -> None:
    pass


class SnapshotGone(Exception):
    """The snapshot a request names is not held any more (its grace period passed), or not on this server."""


# What PostgreSQL says when a transaction imports a snapshot no transaction holds (any more).
NOT_HELD = (asyncpg.UndefinedObjectError, asyncpg.InvalidParameterValueError)


@dataclass(eq=False)
class Held:
    """A holder: its connection, the snapshot it continues (a resume's), the id it exports its snapshot
    under once it has taken it, and when its grace period ends."""

    conn: asyncpg.Connection
    existing: str | None = None
    id: str | None = None
    until: float | None = None
    # Whether its export ended whole (let go before those of cut exports), and whether a statement failed
    # or was cancelled in its transaction (then it holds nothing a resume could continue in).
    whole: bool = False
    broken: bool = False
    # The first statement's savepoint being rolled back (Opening): awaited before the holder is let go.
    settling: asyncio.Task[None] | None = None


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
        self._active: set[Held] = set()
        self._graced: deque[Held] = deque()
        self._opening = 0
        self._expiry: asyncio.Task[None] | None = None
        self._readying: asyncio.Task[None] | None = None
        # The latest export's first statement: what a new holder connection runs once, to warm its caches;
        # the backends that did; the most exports held at once (how many warm connections to keep ready).
        self._recent: str | None = None
        self._warm: set[int] = set()
        self._peak = 1

    @property
    def held(self) -> int:
        return len(self._active) + len(self._graced) + self._opening

    async def start(self) -> None:
        """Open the holders' pool now, one connection ready, so the first export does not wait to connect."""
        await self._holders()
        self._ready_next()

    async def _holders(self) -> asyncpg.Pool:
        async with self._connecting:
            if self._pool is None:
                connected = await create_pool(self._url, 1, self._limit, self._statement_timeout)
                self._pool, self._unit_begin = connected.pool, connected.unit_begin
        return self._pool

    def _ready_next(self) -> None:
        """Once an export's first page is out (and once it has ended), ready warm holder connections for the
        next exports, in the background."""
        # Behind a pooler a holder's connection is a pooler's client: no server backend of its own to warm,
        # and a transaction to warm one would take a server connection a resume may be waiting for.
        if self._readying is None and self._pool is not None and self._unit_begin is None:
            self._readying = asyncio.ensure_future(self._ready(self._pool))
            self._readying.add_done_callback(self._readied)

    async def _ready(self, pool: asyncpg.Pool) -> None:
        """As many idle holder connections as exports have run at once (up to the limit), each warm: a first
        byte should wait neither for a kept snapshot to be let go, nor for a connection to open, nor for a
        new backend's caches (its first statements on a table take milliseconds more, so a new connection
        runs the latest first statement once, its output dropped). Done after an export's first page, never
        beside it: nothing competes with a first page."""
        # Within the room left: a snapshot kept for a resume is let go for an export that needs its room,
        # never ahead of one.
        wanted = min(self._peak, self._limit - self.held)
        taken: list[asyncpg.Connection] = []
        try:
            for _ in range(max(0, wanted)):
                taken.append(await pool.acquire())
            for conn in taken:
                pid = conn.get_server_pid()
                if pid not in self._warm:
                    opening = self.opening(None)
                    if self._recent is None:
                        await conn.execute(opening)
                    else:
                        # A warm-up never waits for a lock (a migration's, say): it just fails.
                        await copy_out(conn, f"{opening}; SET LOCAL lock_timeout = 1; {self._recent}", _dropped)
                    self._warm.add(pid)
        finally:
            for conn in taken:
                await self._release(conn)

    def _readied(self, task: asyncio.Task[None]) -> None:
        self._readying = None
        if not task.cancelled() and task.exception() is not None:  # the next export connects by itself
            log.debug("no holder connection readied: %s", task.exception())

    async def hold(self, existing: str | None = None) -> Held:
        """A holder for a new export: a connection of its own, no transaction yet (Opening, or begin(),
        takes the snapshot); `existing` the snapshot a resume continues (SnapshotGone once it is taken, if
        no longer held)."""
        if existing is not None and not SNAPSHOT_ID.fullmatch(existing):
            raise SnapshotGone(existing)
        while self.held >= self._limit and self._graced:
            await self.make_room()
        self._opening += 1
        try:
            pool = await self._holders()
            conn = await patiently(pool.acquire(), self.make_room)
        finally:
            self._opening -= 1
        held = Held(conn, existing)
        self._active.add(held)
        self._peak = max(self._peak, len(self._active))
        return held

    async def begin(self, held: Held) -> None:
        """Take the snapshot (or import the resume's) and export it, before any other statement."""
        try:
            await patiently(held.conn.execute(self._begin(held.existing)), self.make_room)
        except NOT_HELD:
            held.broken = True
            raise SnapshotGone(held.existing) from None
        held.id = await held.conn.fetchval(EXPORT)

    def opening(self, existing: str | None) -> str:
        """What the export's first statement runs behind, in one query (Opening): the transaction that takes
        the snapshot, its export named in a NOTICE (whatever client_min_messages the role has), and a
        savepoint that keeps the statement's locks out of it."""
        return (
            f"{self._begin(existing)}; SET LOCAL client_min_messages = notice; "
            f"DO $$BEGIN RAISE NOTICE '{NAMED_PREFIX}%', pg_export_snapshot(); END$$; SAVEPOINT first"
        )

    def recent(self, conn: asyncpg.Connection, statement: str) -> None:
        """A holder's connection runs an export's first statement: the one to warm new connections with."""
        self._recent = statement
        self._warm.add(conn.get_server_pid())

    @staticmethod
    def named(message: asyncpg.PostgresLogMessage) -> str | None:
        """The snapshot an opening query's NOTICE names; None for any other message."""
        text = getattr(message, "message", "") or ""
        id = text.removeprefix(NAMED_PREFIX)
        return id if text.startswith(NAMED_PREFIX) and SNAPSHOT_ID.fullmatch(id) else None

    async def settle(self, held: Held) -> None:
        """After the first statement: its savepoint rolled back, so the holder keeps no lock it took."""
        try:
            await held.conn.execute("ROLLBACK TO SAVEPOINT first; RELEASE SAVEPOINT first")
        except BaseException:
            held.broken = True
            raise
        # The first rows are out: now, while the export runs on, is the time to ready the next one's holder.
        self._ready_next()

    def _begin(self, existing: str | None) -> str:
        return snapshot_begin(existing, self._unit_begin)

    async def done(self, held: Held, whole: bool) -> None:
        """The export ended: keep its snapshot `grace` seconds for a resume, or let it go now (no grace, a
        broken one, or a new export waiting for room)."""
        self._active.discard(held)
        if held.settling is not None:
            with contextlib.suppress(BaseException):
                await held.settling
        if self._grace <= 0 or held.broken or held.id is None or self.held >= self._limit:
            await self._let_go(held)
            return
        held.until = time.monotonic() + self._grace
        held.whole = whole
        self._graced.append(held)
        if self._expiry is None or self._expiry.done():
            self._expiry = asyncio.ensure_future(self._expire())
        self._ready_next()

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
        if held.settling is not None:
            with contextlib.suppress(BaseException):
                await held.settling
        await self._release(held.conn)

    async def _release(self, conn: asyncpg.Connection) -> None:
        assert self._pool is not None
        await rollback_quietly(conn)
        await self._pool.release(conn)

    async def close(self) -> None:
        for task in (self._expiry, self._readying):
            if task is not None:
                task.cancel()
                # Its own failure (a warm-up that met a lock, say) was logged when it ended: not the close's.
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        for held in [*self._active, *self._graced]:
            with contextlib.suppress(Exception):
                await self._let_go(held)
        self._active.clear()
        self._graced.clear()
        if self._pool is not None:
            await close_pool(self._pool)
