"""The tables this service serves, as last read from the catalog: found by the name a URL gives, kept
current by a refresh every `catalog_refresh` seconds (a new column, a new table a pattern matches, a
table dropped), with what their rows weigh and how many there are.

    catalog = Catalog(patterns)
    await catalog.load(conn)            # start-up: a missing table named exactly is a CatalogError
    served = catalog.find("sales.orders")
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import urllib.parse
from dataclasses import replace

import asyncpg

from ..names import BadName, Pattern, parse_url_name
from .catalog import Reflection, Table, reflect
from .lanes import Lanes
from .pool import DB_ERRORS
from .statements import estimate_sql, fetch_uncached, key_range_sql, width_sample_sql

log = logging.getLogger(__name__)

# Rows read to measure what a row weighs (raw bytes, not what TOAST compressed them to).
WIDTH_SAMPLE_ROWS = 100


class CatalogError(Exception):
    """The `tables` setting names what the database does not serve; the message says which and why."""


async def measure(conn: asyncpg.Connection, table: Table, previous: Table | None) -> Table:
    """The table with how many rows it has (an estimate), its integer key's range and what its rows weigh
    (sampled again only when the table changed shape)."""
    estimated = table.estimated_rows
    if estimated is None:  # a view, a foreign table, a table never analysed: the planner's estimate
        plan = await fetch_uncached(conn, estimate_sql(table, None))
        estimated = round(json.loads(plan[0][0])[0]["Plan"]["Plan Rows"])
    key_range = None
    if table.integer_key:
        low, high = (await fetch_uncached(conn, key_range_sql(table)))[0]
        key_range = None if low is None else (low, high)
    row_bytes = previous.row_bytes if previous is not None and previous.shape() == table.shape() else None
    if row_bytes is None and table.kind != "view":
        row_bytes = (await fetch_uncached(conn, width_sample_sql(table, WIDTH_SAMPLE_ROWS)))[0][0]
    return replace(table, estimated_rows=estimated, row_bytes=row_bytes, key_range=key_range)


class Catalog:
    def __init__(self, patterns: tuple[Pattern, ...]) -> None:
        self.patterns = patterns
        self.tables: tuple[Table, ...] = ()
        self._by_name: dict[tuple[str, str], Table] = {}
        # The table the bare /chunked and /standard serve: what the setting's first entry names exactly.
        self.default: Table | None = None
        self.refreshed_at = 0.0
        self._refreshing: asyncio.Task[None] | None = None
        self._forever: asyncio.Task[None] | None = None

    async def load(self, conn: asyncpg.Connection) -> None:
        """The first reflection: a table the setting names exactly that is not there stops start-up."""
        reflection = await reflect(conn, self.patterns)
        for missing in reflection.missing:
            if missing.pattern.exact:
                raise CatalogError(f"{missing.pattern.text}: {missing.reason}")
            log.warning("tables: %s matches nothing the database serves (%s)", missing.pattern.text, missing.reason)
        if not reflection.tables:
            raise CatalogError(f"{', '.join(p.text for p in self.patterns)}: no table or view matches")
        await self._take(conn, reflection)

    async def _take(self, conn: asyncpg.Connection, reflection: Reflection) -> None:
        before = {(table.schema, table.name): table for table in self.tables}
        measured = [await measure(conn, table, before.get((table.schema, table.name))) for table in reflection.tables]
        for table in measured:
            old = before.get((table.schema, table.name))
            if old is not None and old.shape() != table.shape():
                log.info("%s changed (columns, types or key): its exports follow the new shape", table.qualified)
            elif old is None and before:
                log.info("%s is served from now on", table.qualified)
        for gone in before.keys() - {(table.schema, table.name) for table in measured}:
            log.warning(
                "%s is no longer in the database (or no longer readable): 404 until it is back", before[gone].qualified
            )
        self.tables = tuple(measured)
        self._by_name = {(table.schema, table.name): table for table in measured}
        first = self.patterns[0]
        self.default = None
        if first.exact:
            self.default = next((t for t in measured if first.matches(t.schema, t.name, t.visible)), None)
        self.refreshed_at = time.monotonic()

    def summary(self) -> str:
        """What is served, for the start-up banner."""
        if len(self.tables) == 1:
            only = self.tables[0]
            rows = "" if only.estimated_rows is None else f" ({only.estimated_rows:,} rows)"
            return f"{only.url_name}{rows}"
        shown = ", ".join(table.url_name for table in self.tables[:5])
        return f"{len(self.tables)} tables ({shown}{', ...' if len(self.tables) > 5 else ''})"

    @property
    def example_path(self) -> str:
        """A table's path for the banner's examples: the bare one for the default table."""
        if self.default is not None:
            return ""
        return "/" + urllib.parse.quote(self.tables[0].url_name, safe="")

    def find(self, url_name: str) -> Table | None:
        """The served table a URL names (exactly: schema.name, or a name search_path makes visible)."""
        try:
            schema, name = parse_url_name(url_name)
        except BadName:
            return None
        if schema is not None:
            return self._by_name.get((schema, name))
        return next((table for table in self.tables if table.visible and table.name == name), None)

    async def refresh(self, lanes: Lanes) -> None:
        """Read the catalog again (requests that ask together share one read)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh(lanes))
        await asyncio.shield(self._refreshing)

    def refresh_soon(self, lanes: Lanes) -> None:
        """Read the catalog again in the background (a request found a table changed)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh(lanes))
            self._refreshing.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def _refresh(self, lanes: Lanes) -> None:
        async with lanes.connection(Lanes.LATER) as conn:
            await self._take(conn, await reflect(conn, self.patterns))

    def start(self, lanes: Lanes, every: float) -> None:
        """Refresh every `every` seconds in the background (0: never)."""
        if every > 0:
            self._forever = asyncio.ensure_future(self._refresh_forever(lanes, every))

    async def _refresh_forever(self, lanes: Lanes, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.refresh(lanes)
            except (*DB_ERRORS, asyncpg.PostgresError) as exc:
                log.warning(
                    "could not read the catalog again (%s): serving the tables as last read", type(exc).__name__
                )

    async def stop(self) -> None:
        for task in (self._forever, self._refreshing):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


async def read_catalog(url: str, patterns: tuple[Pattern, ...]) -> Catalog:
    """The served tables as the catalog says now, over a connection of its own (a supervisor's banner)."""
    conn = await asyncpg.connect(url)
    try:
        catalog = Catalog(patterns)
        await catalog.load(conn)
        return catalog
    finally:
        await conn.close()
