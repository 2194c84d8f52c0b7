"""Served tables for tests of the export layer: a table reflected from the session's database as the
service reflects it, and Exports over it."""

from __future__ import annotations

from typing import Any

import asyncpg

from streaming_api.db.catalog import Table
from streaming_api.db.served import Catalog
from streaming_api.export.formats import FORMATS
from streaming_api.export.request import Export
from streaming_api.names import parse_patterns


async def reflected(conn: asyncpg.Connection, name: str = "points") -> Table:
    """The table as the service would serve it (columns, key, row estimate, row width)."""
    catalog = Catalog(parse_patterns((name,)))
    await catalog.load(conn)
    assert len(catalog.tables) == 1, catalog.tables
    return catalog.tables[0]


async def reflected_at(url: str, name: str = "points") -> Table:
    conn = await asyncpg.connect(url)
    try:
        return await reflected(conn, name)
    finally:
        await conn.close()


def export_of(served: Table, fmt: str = "ndjson", **changes: Any) -> Export:
    """A /chunked export of the whole table unless `changes` say otherwise (page_size=None: /standard)."""
    values: dict[str, Any] = {
        "table": served,
        "format": FORMATS[fmt],
        "columns": served.names,
        "page_size": 1000,
        "first_page_size": 100,
        "page_bytes": 8 << 20,
        **changes,
    }
    if "after_id" in values:
        after_id = values.pop("after_id")
        values["after"] = None if after_id is None else (str(after_id),)
    return Export(**values)
