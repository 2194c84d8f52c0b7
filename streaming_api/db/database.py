"""The database to use: the one at database_url, or else the embedded PostgreSQL started for the occasion.

The one place that decides this, for `serve`, `seed`, the benchmark and the tests alike:

    async with Database(settings) as database:
        seeding = await database.ensure_rows(500_000, when="empty")
        ... database.url ...
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal

import asyncpg

from ..settings import Settings
from . import disk
from .embedded import EmbeddedPostgres
from .schema import row_count, seed

log = logging.getLogger(__name__)

# "empty": seed only a missing or empty table (serve); "different": make it hold exactly `rows` (bench,
# tests); "always": reload it even when it already holds them (the seed command).
Reseed = Literal["empty", "different", "always"]
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Seeding:
    """The rows the table holds after ensure_rows, and whether it had to be (re)loaded for that."""

    rows: int
    seeded: bool
    seconds: float


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

    async def ensure_rows(self, rows: int, when: Reseed = "empty", progress: Progress | None = None) -> Seeding:
        """Seed the points table with rows 1..rows when `when` says so."""
        assert self.url is not None, "start() first"
        started = time.perf_counter()
        conn = await asyncpg.connect(self.url)
        try:
            held = await row_count(conn)
            needed = {"empty": held == 0 and rows > 0, "different": held != rows, "always": True}[when]
            if not needed:
                return Seeding(held, False, time.perf_counter() - started)
            log.info("seeding the points table with %s rows", f"{rows:,}")
            since = disk.log_position(self._embedded)
            try:
                await seed(conn, rows, None if progress is None else (lambda done: progress(done, rows)))
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
                if disk.ran_out(exc, self._embedded, since):
                    self._out_of_space = True
                    raise disk.no_space(rows, self._embedded, exc) from exc
                raise
            seconds = time.perf_counter() - started
            log.info("seeded %s rows in %.1f s", f"{rows:,}", seconds)
            return Seeding(rows, True, seconds)
        finally:
            await conn.close()
