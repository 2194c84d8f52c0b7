"""A Parquet file written from the Arrow stream as it arrives, in row groups: never the whole table in memory.

Each page's record batch waits in a buffer until ROWS_PER_GROUP rows are in, then goes to disk as one
row group (the last one holds the rest), so memory holds about one row group whatever the export's size.
"""

from __future__ import annotations

from typing import BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from .arrow import Message
from .records import BodyError

# Row groups of 64k rows: large enough for columnar compression and fast scans, small in memory (~4 MB here).
ROWS_PER_GROUP = 65_536
COMPRESSION = "zstd"


class ParquetFileWriter:
    def __init__(self, sink: BinaryIO, rows_per_group: int = ROWS_PER_GROUP) -> None:
        self._sink = sink
        self._rows_per_group = rows_per_group
        self._writer: pq.ParquetWriter | None = None
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self.bytes_written = 0

    def write(self, message: Message) -> None:
        if self._writer is None:
            self._writer = pq.ParquetWriter(self._sink, message.schema, compression=COMPRESSION)
        if message.batch is None or message.batch.num_rows == 0:
            return
        self._pending.append(message.batch)
        self._pending_rows += message.batch.num_rows
        while self._pending_rows >= self._rows_per_group:
            table = pa.Table.from_batches(self._pending)
            self._write_group(table.slice(0, self._rows_per_group))
            rest = table.slice(self._rows_per_group)
            self._pending, self._pending_rows = rest.to_batches(), rest.num_rows

    def finish(self) -> None:
        if self._writer is None:
            raise BodyError("no response reached its schema")
        if self._pending_rows:
            self._write_group(pa.Table.from_batches(self._pending))
            self._pending, self._pending_rows = [], 0
        self._writer.close()  # the footer; the sink stays open (its owner closes it)
        self.bytes_written = self._sink.tell()

    def _write_group(self, table: pa.Table) -> None:
        assert self._writer is not None
        self._writer.write_table(table, row_group_size=table.num_rows)
        self.bytes_written = self._sink.tell()
