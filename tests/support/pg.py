"""PostgreSQL for the tests: seeding, the bigger second table, an embedded server to stop and restart, and
ways to make the database misbehave on cue (a lock, a killed backend)."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from streaming_api.db.embedded import EmbeddedPostgres
from streaming_api.db.schema import row_count, seed

# The session's table: not a multiple of the page size, and past several of the every-101st rows that
# need escaping.
ROWS = 2_345
# Big enough that a stream cannot fit in the socket buffers (about 14 MB of ndjson), so a client that
# stops reading really does hold its stream mid-way.
BIG_ROWS = 100_000
BIG_DATABASE = "streaming_api_reliability"
T = TypeVar("T")


async def seed_database(url: str, rows: int) -> None:
    """Make the points table of the database at url hold exactly rows 1..rows."""
    conn = await asyncpg.connect(url)
    try:
        await seed(conn, rows)
    finally:
        await conn.close()


async def fetch_rows(url: str) -> list[dict]:
    conn = await asyncpg.connect(url)
    try:
        return [dict(record) for record in await conn.fetch("SELECT * FROM points ORDER BY id")]
    finally:
        await conn.close()


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _ensure_big_database(url: str) -> str:
    """A second database on the session's server whose points table holds BIG_ROWS rows (made once)."""
    conn = await asyncpg.connect(url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", BIG_DATABASE)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{BIG_DATABASE}"')
    finally:
        await conn.close()
    big_url = _with_database(url, BIG_DATABASE)
    conn = await asyncpg.connect(big_url)
    try:
        if await row_count(conn) != BIG_ROWS:
            await seed(conn, BIG_ROWS)
    finally:
        await conn.close()
    return big_url


def big_database_url(session_url: str) -> str:
    return asyncio.run(_ensure_big_database(session_url))


async def create_scratch_database(url: str, prefix: str = "scratch") -> str:
    """A new, empty database on the server at url (its URL): a test's own, to create tables in."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    conn = await asyncpg.connect(url)
    try:
        # Identifiers cannot be bound parameters; the name is generated above.
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return _with_database(url, name)


@asynccontextmanager
async def scratch_database(url: str, prefix: str = "scratch") -> AsyncIterator[str]:
    """A new, empty database on the server at url (its URL) for the block, dropped afterwards."""
    scratch = await create_scratch_database(url, prefix)
    try:
        yield scratch
    finally:
        await drop_database(scratch)


async def drop_database(url: str) -> None:
    """Drop the database url names (from the server's postgres database), connections and all."""
    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(_with_database(url, "postgres"))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


class RestartablePostgres:
    """An embedded server the tests may stop and start again; always at the same URL (a socket in its data dir)."""

    def __init__(self, data_path: Path) -> None:
        self._server = EmbeddedPostgres(data_path)
        self.running = False
        self.url = ""

    def start(self) -> None:
        self.url = self._server.start()
        self.running = True

    def stop(self) -> None:
        self._server.stop()
        self.running = False


@asynccontextmanager
async def points_locked(url: str) -> AsyncIterator[None]:
    """Hold an ACCESS EXCLUSIVE lock on points until the block ends: every page query started meanwhile waits."""
    conn = await asyncpg.connect(url)
    try:
        transaction = conn.transaction()
        await transaction.start()
        # Waits for a page query already running, so afterwards the next one is sure to block.
        await conn.execute("LOCK TABLE points IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            await transaction.rollback()
    finally:
        await conn.close()


async def service_backends_waiting_on_lock(url: str, count: int, within: float) -> list[int]:
    """The pids of the service's backends whose queries are blocked on a lock, once there are `count`."""
    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + within
        while True:
            pids = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'streaming_api' "
                "AND datname = current_database() AND wait_event_type = 'Lock'"
            )
            if len(pids) >= count:
                return [record["pid"] for record in pids]
            if time.monotonic() > deadline:
                raise AssertionError(f"not {count} queries of the service blocked on the lock within {within:g} s")
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


async def service_backend_waiting_on_lock(url: str, within: float) -> int:
    """The pid of the service's backend whose page query is blocked on a lock."""
    return (await service_backends_waiting_on_lock(url, 1, within))[0]


async def terminate_backend(url: str, pid: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


async def while_the_database_fails(url: str, reading: Awaitable[T], within: float = 30) -> T:
    """The database failing mid-stream, on cue: lock the points table (the export's next statement waits on
    it), run `reading` meanwhile, terminate the backend that waits, and return what `reading` gives (or
    raise what it raises: an incomplete transfer, as a rule)."""
    async with points_locked(url):
        task = asyncio.ensure_future(reading)
        pid = await service_backend_waiting_on_lock(url, within=within)
        await terminate_backend(url, pid)
        return await asyncio.wait_for(task, within)
