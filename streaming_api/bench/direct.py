"""Into a pyarrow.Table: the service's Arrow read by the client's read_table, against a direct connection to
PostgreSQL that an analyst could use instead: ADBC's PostgreSQL driver (binary COPY decoded in C++) and
ConnectorX, where installed.

The direct reads run the query the floor runs (every column of the table in key order, with the limit),
ADBC on a connection opened beforehand (as the floor's is), ConnectorX on its own (it opens one per read).
Each read is timed from the call to the whole table in hand, with the CPU the bench process spent on it.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..db.catalog import Table
from .floor import floor_query

# The readers a group of format arrow times beside its runs, in the order they run.
DIRECT_READERS = ("adbc", "connectorx")
SERVICE_READER = "read_table"
_MODULES = {"adbc": "adbc_driver_postgresql", "connectorx": "connectorx"}
_PACKAGES = {"adbc": "adbc-driver-postgresql", "connectorx": "connectorx"}


def installed_readers() -> tuple[tuple[str, ...], list[str]]:
    """The direct readers importable here, and a note for each one that is not."""
    found, notes = [], []
    for reader in DIRECT_READERS:
        if importlib.util.find_spec(_MODULES[reader]) is not None:
            found.append(reader)
        else:
            notes.append(f"{_PACKAGES[reader]} is not installed: its direct read into a pyarrow.Table is not timed")
    return tuple(found), notes


@dataclass
class TableRead:
    """One read into a pyarrow.Table (the table itself is kept only until it has been compared)."""

    total_ms: float | None
    client_cpu_s: float
    table: Any = None
    error: str | None = None


async def timed(read: Callable[[], Any]) -> TableRead:
    """`read()` (a coroutine function, or a blocking one run on a thread), timed to the table in hand."""
    cpu_started = time.process_time()
    started = time.perf_counter()
    try:
        table = await read() if inspect.iscoroutinefunction(read) else await asyncio.to_thread(read)
    except Exception as exc:  # a reader's failure is a figure of the run, not the end of the bench
        return TableRead(None, round(time.process_time() - cpu_started, 4), error=f"{type(exc).__name__}: {exc}")
    total = time.perf_counter() - started
    return TableRead(round(total * 1000, 3), round(time.process_time() - cpu_started, 4), table)


class DirectReaders:
    """The direct connections of one bench run: ADBC's opened once and kept, ConnectorX's per read."""

    def __init__(self, url: str, readers: tuple[str, ...]) -> None:
        self.url = url
        self.readers = readers
        self._adbc: Any = None

    def query(self, served: Table, limit: int | None) -> str:
        return floor_query("binary", served, limit)

    def reader(self, name: str, sql: str) -> Callable[[], Any]:
        return {"adbc": lambda: self._read_adbc(sql), "connectorx": lambda: _read_connectorx(self.url, sql)}[name]

    def _read_adbc(self, sql: str) -> Any:
        if self._adbc is None:
            import adbc_driver_postgresql.dbapi as adbc

            self._adbc = adbc.connect(self.url)
        with self._adbc.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetch_arrow_table()

    def close(self) -> None:
        if self._adbc is not None:
            self._adbc.close()
            self._adbc = None


def _read_connectorx(url: str, sql: str) -> Any:
    import connectorx

    return connectorx.read_sql(connectorx_url(url), sql, return_type="arrow")


def connectorx_url(url: str) -> str:
    """ConnectorX wants a host in the URL even where ?host= names a socket directory (libpq's form): localhost."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc + "localhost"))


def compare_schemas(service: Any, direct: Any) -> dict[str, Any]:
    """The service's table against a direct reader's, field by field: the types that differ (names and order
    must be the same), the fields only the service marks not nullable, and whether every column of the
    same type holds the same values."""
    if service.schema.names != direct.schema.names:
        return {"same_names": False, "service": service.schema.names, "direct": direct.schema.names}
    differences, not_nullable, unequal = [], [], []
    for field, other in zip(service.schema, direct.schema, strict=True):
        if not field.type.equals(other.type):
            differences.append({"column": field.name, "service": str(field.type), "direct": str(other.type)})
            continue
        if not field.nullable and other.nullable:
            not_nullable.append(field.name)
        if not service.column(field.name).equals(direct.column(field.name)):
            unequal.append(field.name)
    return {
        "same_names": True,
        "type_differences": differences,
        "not_nullable_in_service_only": not_nullable,
        "columns_compared": len(service.schema) - len(differences),
        "columns_with_other_values": unequal,
        "rows": [service.num_rows, direct.num_rows],
    }
