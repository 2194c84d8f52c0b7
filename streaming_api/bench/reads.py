"""A group of format arrow at one client also reads its rows into a pyarrow.Table, between its runs: the
service's through read_table, and each direct reader's (bench.direct), one after the other, so that a
change in the machine's load hits them all alike. The warm-up round compares the tables' schemas and values."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..client.arrow import read_table
from ..db.catalog import Table
from .direct import SERVICE_READER, DirectReaders, compare_schemas, installed_readers, timed
from .meters import CpuMeter
from .results import GroupResult, TableReadResult


def direct_readers(url: str | None, notes: list[str]) -> DirectReaders | None:
    """The direct readers installed here, on the database the floor runs against (a note for each missing)."""
    readers, missing = installed_readers()
    notes.extend(missing)
    return DirectReaders(url, readers) if readers and url else None


class TableReads:
    """The reads of one group: where the service is and where PostgreSQL is, and what measures them."""

    def __init__(
        self,
        direct: DirectReaders | None,
        served: Table | None,
        url: str,
        token: str | None,
        limit: int | None,
        page_size: int | None,
        server_pid: int | None,
        postgres_cpu: CpuMeter | None,
    ) -> None:
        self.direct = direct if served is not None else None
        self.sql = direct.query(served, limit) if direct is not None and served is not None else None
        self.url = url
        self.token = token or ""
        self.limit = limit
        self.page_size = page_size
        self.server_cpu = CpuMeter(server_pid, descendants=True) if server_pid is not None else None
        self.postgres_cpu = postgres_cpu

    @property
    def readers(self) -> tuple[str, ...]:
        return (*(self.direct.readers if self.direct else ()), SERVICE_READER)

    async def round(self, group: GroupResult, warmup: bool) -> None:
        """Every reader once, in turn; after the warm-up round, the service's table against each direct one's."""
        tables: dict[str, Any] = {}
        for reader in self.readers:
            result, table = await self._read(reader, group.rows, warmup)
            group.table_reads.append(result)
            if table is not None:
                tables[reader] = table
        if warmup and SERVICE_READER in tables:
            service = tables.pop(SERVICE_READER)
            group.schemas = {
                "service": [[field.name, str(field.type), field.nullable] for field in service.schema],
                **{reader: compare_schemas(service, table) for reader, table in tables.items()},
            }

    async def _read(self, reader: str, rows: int | None, warmup: bool) -> tuple[TableReadResult, Any]:
        server_before = self.server_cpu.snapshot() if self.server_cpu else None
        postgres_before = self.postgres_cpu.snapshot() if self.postgres_cpu else None
        read = await timed(self._reader(reader))
        server = CpuMeter.used(server_before, self.server_cpu.snapshot()) if self.server_cpu and server_before else None
        postgres = (
            CpuMeter.used(postgres_before, self.postgres_cpu.snapshot())
            if self.postgres_cpu and postgres_before
            else None
        )
        got = None if read.table is None else read.table.num_rows
        error = read.error
        if error is None and rows is not None and got != rows:
            error = f"read {got:,} rows, expected {rows:,}"
        result = TableReadResult(
            reader=reader,
            warmup=warmup,
            total_ms=read.total_ms,
            rows=got,
            client_cpu_s=read.client_cpu_s,
            server_cpu_s=server if reader == SERVICE_READER else None,
            postgres_cpu_s=postgres,
            ok=error is None,
            error=error,
        )
        return result, read.table if warmup else None

    def _reader(self, reader: str) -> Callable[[], Any]:
        if reader == SERVICE_READER:

            async def service() -> Any:
                # No content coding: the group is identity's (a coded group is another transfer).
                return await read_table(
                    self.url, self.token, limit=self.limit, page_size=self.page_size, compressed=False, retries=0
                )

            return service
        assert self.direct is not None and self.sql is not None
        return self.direct.reader(reader, self.sql)
