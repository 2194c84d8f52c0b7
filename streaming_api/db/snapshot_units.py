"""The units of work of an export that reads one snapshot (db.lanes.Units), and the moment it names.

Straight to PostgreSQL (Opening) the first unit runs on the export's holder (db.snapshots), in the query
that takes and names the snapshot; the rest read it on the shared lanes. Behind a transaction pooler
(HeldLane) every unit runs on the holder's connection, one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import asyncpg

from .lanes import Lanes, Output, Reading, copy_out
from .snapshots import NOT_HELD, Held, SnapshotGone

if TYPE_CHECKING:
    from .snapshots import Snapshots

# How long a statement on a holder's connection may run on after its caller was cancelled.
SETTLE_SECONDS = 1.0


class Moment:
    """The snapshot an export reads, as its response names it (X-Snapshot, "server:id"): known at once, or
    once the export's first statement has taken it."""

    def __init__(self, label: str, id: str | None = None) -> None:
        self.label = label
        self._id: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        if id is not None:
            self._id.set_result(id)
        # What takes the snapshot when its name is wanted before any statement ran (an export of no rows).
        self.take: Callable[[], Awaitable[None]] | None = None

    def taken(self, id: str) -> None:
        self._id.set_result(id)

    def failed(self, exc: BaseException) -> None:
        if not self._id.done():
            self._id.set_exception(exc)
            self._id.exception()  # retrieved: an export that failed first has its own error to raise

    async def name(self) -> str:
        if self.take is not None and not self._id.done():
            await self.take()
        return f"{self.label}:{await asyncio.shield(self._id)}"


class Opening:
    """A new export's units of work straight to PostgreSQL (db.lanes.Units). The first runs on the
    holder's connection, in the transaction that takes the snapshot, inside a savepoint; once it is done the
    savepoint is rolled back (its locks let go), the snapshot exported, and every later unit reads it on
    the shared lanes, each in a transaction that imports it."""

    def __init__(self, snapshots: Snapshots, held: Held, lanes: Lanes, moment: Moment) -> None:
        self._snapshots = snapshots
        self._held = held
        self._lanes = lanes
        self._moment = moment
        self._first_taken = False
        self._later: asyncio.Future[Reading] = asyncio.get_running_loop().create_future()
        moment.take = self._take_now

    async def _take_now(self) -> None:
        """No statement has run yet, and the snapshot's name is wanted: take it with none."""
        if self._first_taken:
            return
        self._first_taken = True
        try:
            await self._snapshots.begin(self._held)
        except BaseException as exc:
            raise self._failed(exc) from None
        self._taken()

    async def _reading(self) -> Reading:
        return await asyncio.shield(self._later)

    async def copy(self, priority: int, statement: str, output: Output, long: bool = False) -> str:
        if self._first_taken:
            return await (await self._reading()).copy(priority, statement, output, long)
        self._first_taken = True
        conn = self._held.conn
        self._snapshots.recent(conn, statement)
        conn.add_log_listener(self._named)
        try:
            status = await copy_out(conn, f"{self._snapshots.opening(self._held.existing)}; {statement}", output)
        except BaseException as exc:
            raise self._failed(exc) from None
        finally:
            conn.remove_log_listener(self._named)
        self._settle()
        return status

    @contextlib.asynccontextmanager
    async def connection(self, priority: int) -> AsyncIterator[asyncpg.Connection]:
        if self._first_taken:
            async with (await self._reading()).connection(priority) as conn:
                yield conn
            return
        self._first_taken = True
        conn = self._held.conn
        conn.add_log_listener(self._named)
        try:
            await conn.execute(self._snapshots.opening(self._held.existing))
        except BaseException as exc:
            raise self._failed(exc) from None
        finally:
            conn.remove_log_listener(self._named)
        try:
            yield conn
        except BaseException as exc:
            raise self._failed(exc) from None
        self._settle()

    def _named(self, conn: asyncpg.Connection, message: asyncpg.PostgresLogMessage) -> None:
        """The opening query's NOTICE: the snapshot's name, known before the first statement's rows."""
        id = self._snapshots.named(message)
        if id is not None and self._held.id is None:
            self._held.id = id
            self._taken()

    def _settle(self) -> None:
        """After the first unit: roll its savepoint back (its locks let go) while the export goes on."""
        if self._held.id is None:  # no name came (PostgreSQL said nothing): the export cannot go on
            raise self._failed(RuntimeError("the snapshot's transaction did not name its snapshot"))
        self._held.settling = asyncio.ensure_future(self._snapshots.settle(self._held))

    @contextlib.asynccontextmanager
    async def transaction(self, priority: int, long: bool = False) -> AsyncIterator[asyncpg.Connection]:
        # Only a relation without a key runs in one transaction, and its export holds no snapshot.
        async with (await self._reading()).transaction(priority, long) as conn:
            yield conn

    def _taken(self) -> None:
        assert self._held.id is not None
        self._moment.taken(self._held.id)
        self._later.set_result(self._lanes.reading(self._held.id))

    def _failed(self, exc: BaseException) -> BaseException:
        """The export's first unit failed (or its snapshot could not be exported): the export ends with that
        error (SnapshotGone when a resume's snapshot is not held), and nothing is left to continue in."""
        self._held.broken = True
        if isinstance(exc, NOT_HELD) and self._held.existing is not None:
            exc = SnapshotGone(self._held.existing)
        self._moment.failed(exc)
        if not self._later.done():
            self._later.set_exception(exc)
            self._later.exception()  # retrieved: the export raises it itself
        return exc


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

    async def copy(self, priority: int, statement: str, output: Output, long: bool = False) -> str:
        async with self.transaction(priority, long) as conn:
            return await copy_out(conn, statement, output)


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
