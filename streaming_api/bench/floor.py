"""The floor: PostgreSQL's own export of the same rows, read by asyncpg into a sink that discards them.

`COPY (the same query) TO STDOUT` as CSV (the floor of csv and text), as one row_to_json per line
(the floor of ndjson and json; fixed, whatever rendering the service uses), and in PostgreSQL's binary
format (the floor of arrow: typed values, nothing rendered as text). The query is the one /standard
runs: the table's rows in key order (those a group's filter keeps), with the request's limit if any.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import asyncpg
from sqlalchemy import Text, cast, func, literal_column, select

from ..db.catalog import Table
from ..db.pool import BASE_SERVER_SETTINGS, OUTPUT_SETTINGS
from ..db.statements import sql_text, table_clause

# Which floor an export format is compared with.
FLOOR_OF_FORMAT = {"ndjson": "row_to_json", "json": "row_to_json", "csv": "csv", "text": "csv", "arrow": "binary"}
FLOOR_LABELS = {
    "row_to_json": "COPY (SELECT row_to_json(...)) TO STDOUT",
    "csv": "COPY (SELECT ...) TO STDOUT (FORMAT csv, HEADER)",
    "binary": "COPY (SELECT ...) TO STDOUT (FORMAT binary)",
}
COPY_OPTIONS: dict[str, dict[str, object]] = {"csv": {"format": "csv", "header": True}, "binary": {"format": "binary"}}


@dataclass(frozen=True)
class FloorRun:
    kind: str
    total_ms: float
    first_byte_ms: float | None
    bytes: int
    rows: int
    # CPU the bench process spent reading and discarding (asyncpg's share of the floor).
    client_cpu_s: float


def floor_query(kind: str, served: Table, limit: int | None = None, where: str | None = None) -> str:
    """The COPY source query for one floor: every column of the table (of the rows `where` keeps: a
    filtered group's condition, as a page writes it), in key order."""
    clause = table_clause(served)
    rows = select(*(clause.c[name] for name in served.names)).select_from(clause)
    if where is not None:
        rows = rows.where(literal_column(where))
    if served.key:
        rows = rows.order_by(*(clause.c[name] for name in served.key))
    if limit is not None:
        rows = rows.limit(limit)
    if kind == "row_to_json":
        page = rows.subquery("page")
        rows = select(cast(func.row_to_json(literal_column(page.name)), Text)).select_from(page)
    elif kind not in COPY_OPTIONS:
        raise ValueError(f"unknown floor {kind!r}")
    return sql_text(rows)


async def connect(url: str) -> asyncpg.Connection:
    # The same session settings as the service's pool: the same text for every value.
    settings = {**BASE_SERVER_SETTINGS, **OUTPUT_SETTINGS, "application_name": "streaming_api_bench"}
    return await asyncpg.connect(url, server_settings=settings)


async def measure_floor(
    conn: asyncpg.Connection, kind: str, served: Table, limit: int | None = None, where: str | None = None
) -> FloorRun:
    sql = floor_query(kind, served, limit, where)
    args: list = []
    received = 0
    first_at: float | None = None

    async def discard(data: bytes) -> None:
        nonlocal received, first_at
        if first_at is None:
            first_at = time.perf_counter()
        received += len(data)

    options = COPY_OPTIONS.get(kind, {})
    cpu_started = time.process_time()
    started = time.perf_counter()
    status = await conn.copy_from_query(sql, *args, output=discard, **options)
    finished = time.perf_counter()
    cpu = time.process_time() - cpu_started
    # The command tag is "COPY <rows>" (binary too: rows, not messages).
    rows = int(status.split()[-1]) if status else 0
    return FloorRun(
        kind=kind,
        total_ms=round((finished - started) * 1000, 3),
        first_byte_ms=None if first_at is None else round((first_at - started) * 1000, 3),
        bytes=received,
        rows=rows,
        client_cpu_s=round(cpu, 4),
    )


async def count_rows(conn: asyncpg.Connection, served: Table, where: str | None = None) -> int:
    """The table's rows now (those `where` keeps): what an export of the whole of it must hold."""
    statement = select(func.count()).select_from(table_clause(served))
    if where is not None:
        statement = statement.where(literal_column(where))
    return await conn.fetchval(sql_text(statement))


async def postgres_version(conn: asyncpg.Connection) -> str:
    return await conn.fetchval("SHOW server_version")
