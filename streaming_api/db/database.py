"""The database to use: the one at database_url, or else the embedded PostgreSQL started for the occasion.

The one place that decides this, for `serve`, `seed`, the benchmark and the tests alike:

    async with Database(settings) as database:
        seeding = await database.ensure_rows(500_000, when="empty")
        ... database.url ...
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import TracebackType

import asyncpg

from ..settings import Settings
from . import disk
from .demo import DEMO_TABLES, Progress, Reseed, Seeding, ensure_rows
from .embedded import EmbeddedPostgres


class Database:
    """database_url when it is set, else the embedded PostgreSQL under `data_path` (default: the setting's)."""

    def __init__(self, settings: Settings, data_path: Path | None = None) -> None:
        self._configured_url = settings.database_url
        self._embedded = None if settings.database_url else EmbeddedPostgres(data_path or settings.data_path)
        self.url: str | None = None
        # A full disk met while seeding: the embedded server cannot write a shutdown checkpoint.
        self._out_of_space = False

    @property
    def embedded(self) -> EmbeddedPostgres | None:
        return self._embedded

    @property
    def description(self) -> str:
        """Where the data lives, for a person: never the URL itself (it may hold a password)."""
        if self._embedded is None:
            return "DATABASE_URL"
        return f"embedded PostgreSQL in {self._embedded.pgdata}"

    async def start(self) -> str:
        """The URL to connect to, starting the embedded server first if it is the one to use."""
        if self._embedded is None:
            assert self._configured_url is not None
            self.url = self._configured_url
        else:
            self.url = await asyncio.to_thread(self._embedded.start)
        return self.url

    async def stop(self) -> bool:
        """Let go of the database; True when that stopped the embedded server (the last process using it)."""
        if self._embedded is None:
            return False
        return await asyncio.to_thread(self._embedded.stop, self._out_of_space)

    async def __aenter__(self) -> Database:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def ensure_demo(self, rows: int, progress: Progress | None = None) -> Seeding | None:
        """The embedded database's demo table, seeded with rows 1..rows on its first start. A database at
        database_url is the user's: nothing is written to it unasked (None)."""
        if self._embedded is None:
            return None
        return await self.ensure_rows(rows, "empty", progress)

    async def ensure_rows(
        self, rows: int, when: Reseed = "empty", progress: Progress | None = None, table: str = "points"
    ) -> Seeding:
        """Seed a demo table (db.demo: points, orders, blobs) with rows 1..rows when `when` says so
        (NotTheDemoTable if a table of its name has another shape)."""
        assert self.url is not None, "start() first"
        since = disk.log_position(self._embedded)
        try:
            return await ensure_rows(self.url, DEMO_TABLES[table], rows, when, progress)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            if disk.ran_out(exc, self._embedded, since):
                self._out_of_space = True
                raise disk.no_space(rows, self._embedded, exc, table) from exc
            raise
