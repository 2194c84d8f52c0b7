"""Where exports read: the read replicas, spread across them, or the primary when none is healthy.

Each database (the primary, each replica) has its own pool and lanes. An export picks its source when it
starts: the healthy replicas in turn, then the primary. A replica that fails is set aside for
RETRY_SECONDS (the export that saw it fail tries the next source, if it had sent nothing yet), and a
background check brings it back once it answers again; one that is down at start-up is a warning, not a
failure, and is connected later. Seeding and schema changes only ever run on the primary (db.database).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

import asyncpg

from .lanes import Lanes
from .pool import DB_ERRORS, close_pool, create_pool
from .snapshots import Snapshots

log = logging.getLogger(__name__)

RETRY_SECONDS = 5.0
CHECK_SECONDS = 5.0
PING_SECONDS = 2.0


def where(url: str) -> str:
    """host:port (or the socket directory) of a database URL, for people: never its user or password."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = parts.hostname or query.get("host", ["localhost"])[0]
    port = parts.port or int(query.get("port", ["5432"])[0])
    return f"{host}:{port}"


@dataclass
class Source:
    name: str
    url: str
    replica: bool
    lanes: Lanes | None = None
    # The snapshots its exports hold (db.snapshots), once connected.
    snapshots: Snapshots | None = None
    healthy: bool = False
    # When a failed replica may be tried again (time.monotonic()).
    retry_at: float = 0.0
    error: str | None = None

    @property
    def label(self) -> str:
        """A short name for the access log and /healthz: primary, replica1, replica2..."""
        return self.name.split(" (")[0].replace(" ", "")

    def usable(self, now: float) -> bool:
        return self.lanes is not None and (self.healthy or now >= self.retry_at)


@dataclass(frozen=True)
class PoolSize:
    """How every source's pool is made: its connections, and the time limits of its statements."""

    min_size: int
    max_size: int
    statement_timeout: float
    # For a statement that is a whole export (a relation without a key): request_deadline.
    long_timeout: float
    # Snapshots held at once (db.snapshots), and how long one is kept for a resume after its export.
    snapshot_limit: int = 1
    snapshot_grace: float = 0.0
    # Whether /chunked's exports hold snapshots by default (then a holder connection is opened at once).
    snapshots: bool = False


@dataclass
class Sources:
    primary: Source
    size: PoolSize
    replicas: list[Source] = field(default_factory=list)
    _turn: itertools.count = field(default_factory=itertools.count)
    _checking: asyncio.Task[None] | None = None

    def named(self, label: str) -> Source | None:
        """The source a label names (primary, replica1...), if it is one of this service's."""
        return next((s for s in (self.primary, *self.replicas) if s.label == label), None)

    def for_export(self) -> list[Source]:
        """The sources to try for one export, in order: the usable replicas, starting with the next one in
        turn (so exports spread across them), then the primary."""
        now = time.monotonic()
        usable = [replica for replica in self.replicas if replica.usable(now)]
        if usable:
            start = next(self._turn) % len(usable)
            usable = usable[start:] + usable[:start]
        return [*usable, self.primary]

    def failed(self, source: Source, exc: BaseException) -> None:
        if not source.replica:
            return
        if source.healthy:
            log.warning("%s failed (%s): set aside for %g s", source.name, _describe(exc), RETRY_SECONDS)
        source.healthy = False
        source.error = _describe(exc)
        source.retry_at = time.monotonic() + RETRY_SECONDS

    def worked(self, source: Source) -> None:
        if source.replica and not source.healthy:
            log.info("%s answers again", source.name)
            source.healthy = True
            source.error = None

    async def ping(self, source: Source) -> None:
        """One round trip; DB_ERRORS (or TimeoutError) when the source does not answer."""
        if source.lanes is None:
            raise ConnectionError(source.error or "not connected")
        await source.lanes.ping(PING_SECONDS)

    async def connect(self, source: Source) -> None:
        """Open the source's pool, and its lanes over it."""
        size = self.size
        connected = await create_pool(source.url, size.min_size, size.max_size, size.statement_timeout)
        source.lanes = Lanes(connected.pool, size.max_size, connected.unit_begin, size.long_timeout)
        source.snapshots = Snapshots(source.url, size.snapshot_limit, size.snapshot_grace, size.statement_timeout)
        if connected.unit_begin is not None:
            # Behind a pooler a kept snapshot holds a server connection: a unit that waits for one frees it.
            source.lanes.make_room = source.snapshots.make_room
        if size.snapshots:
            await source.snapshots.start()

    async def start_replicas(self) -> None:
        """Connect to every replica; one that does not answer is a warning (it is tried again later)."""

        async def connect(replica: Source) -> None:
            try:
                await self.connect(replica)
                replica.healthy = True
            except (*DB_ERRORS, asyncpg.PostgresError) as exc:
                replica.error = _describe(exc)
                replica.retry_at = time.monotonic() + RETRY_SECONDS
                log.warning("%s is not available (%s): exports read elsewhere until it is", replica.name, replica.error)

        await asyncio.gather(*(connect(replica) for replica in self.replicas))
        if self.replicas:
            self._checking = asyncio.ensure_future(self._check_forever())

    async def _check_forever(self) -> None:
        """Bring set-aside replicas back (connecting those that were down at start-up) once they answer."""
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            for replica in self.replicas:
                if replica.healthy:
                    continue
                try:
                    if replica.lanes is None:
                        await self.connect(replica)
                    await self.ping(replica)
                except (*DB_ERRORS, asyncpg.PostgresError) as exc:
                    replica.error = _describe(exc)
                    continue
                self.worked(replica)

    async def close(self) -> None:
        if self._checking is not None:
            self._checking.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checking
        for source in (*self.replicas, self.primary):
            if source.snapshots is not None:
                await source.snapshots.close()
            if source.lanes is not None:
                await close_pool(source.lanes.pool)


def _describe(exc: BaseException) -> str:
    text = str(exc).split("\n")[0][:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def sources_for(primary_url: str, replica_urls: tuple[str, ...], size: PoolSize) -> Sources:
    replicas = [
        Source(f"replica {index} ({where(url)})", url, replica=True) for index, url in enumerate(replica_urls, start=1)
    ]
    return Sources(Source("primary", primary_url, replica=False, healthy=True), size, replicas)
