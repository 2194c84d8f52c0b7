"""format=arrow: an Arrow IPC stream, the schema first, one record batch per page, the end-of-stream marker last.

No Python runs per row. PostgreSQL folds each page into one row of byte strings ("streams"): a record
per row, holding every fixed-width value in its binary form (int8send, float8send, timestamptz_send...)
behind a null flag where the column may be NULL, every variable-width value's length (-1 for NULL) and
every array's element count; then each variable-width column's bytes; then each array's elements, as
records of their own (and their bytes). numpy reads the records with one structured view, offsets are
cumulative sums of lengths, and pyarrow wraps the buffers as arrays (decimals cast from text in C++).

Types follow ADBC's PostgreSQL driver (int2 → int16, timestamptz → timestamp[us, UTC], interval →
month_day_nano, uuid → arrow.uuid, json(b) → arrow.json, numeric → its text, arrays → list); where this
differs (numeric(p,s) → decimal128, oid → uint32, ±infinity → null, other types as their text),
docs/types.md says so.

A page is one statement, a binary COPY, so it works behind PgBouncer in transaction pooling; a relation
without a key is read through a cursor whose rows are the same streams, a row at a time (cursor_query).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from sqlalchemy import Integer, Select, cast, func, literal_column, select, text, true
from sqlalchemy import column as sql_column
from sqlalchemy.dialects.postgresql import aggregate_order_by

from ..db.catalog import Column, Table
from ..db.statements import Bound, quote_identifier, table_clause
from .arrow_types import Codec, Fixed, ListOf, Var, codec
from .layout import Layout

# The IPC stream's end-of-stream marker: without it a reader knows the stream was cut short.
END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_NULL = "'\\xffffffff'::bytea"


@dataclass
class _Slot:
    """Where one Arrow column (or an array's elements) is in the page: its record fields and streams."""

    codec: Codec
    flag: str | None
    value: str
    # Var: the stream of its bytes. ListOf: the stream of its elements' records.
    stream: int | None = None
    element: _Slot | None = None


@dataclass
class _Record:
    """A record being laid out: the SQL of its pieces (joined with ||) and numpy's fields to read them."""

    pieces: list[str]
    fields: list[tuple[str, str | np.dtype]]

    @property
    def sql(self) -> str:
        return " || ".join(self.pieces)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.fields)


def _place(value: str, kind: Fixed | Var, nullable: bool, name: str, record: _Record) -> tuple[_Slot, str | None]:
    """Lay a prepared value out in `record`: (its slot, the SQL of its bytes for a stream of their own)."""
    if isinstance(kind, Fixed):
        flag = None
        sent = f"{kind.send}({value})"
        if nullable or kind.makes_nulls:
            flag = name + ".null"
            record.pieces.append(f"CASE WHEN ({value}) IS NULL THEN '\\x00'::bytea ELSE '\\x01'::bytea END")
            record.fields.append((flag, "u1"))
            sent = f"coalesce({sent}, '\\x{'00' * kind.dtype.itemsize}'::bytea)"
        record.pieces.append(sent)
        record.fields.append((name, kind.dtype))
        return _Slot(kind, flag, name), None
    length = f"int4send({kind.length(value)})"
    record.pieces.append(f"coalesce({length}, {_NULL})" if nullable or kind.makes_nulls else length)
    record.fields.append((name, ">i4"))
    return _Slot(kind, None, name), kind.to_bytes(value)


class PageDecoder:
    """A page's streams (as PostgreSQL folded them) as a RecordBatch.

    The page's query has two levels. Inside, one row per table row: each column's value prepared once
    (its text, a decimal's scaled integer...), and each array's elements laid out by one LATERAL join.
    Outside, the streams, each aggregated over those rows in key order: stream 0 the records (every
    fixed-width value, every length and element count), then each column's bytes, each array's elements'
    records and bytes."""

    def __init__(self, served: Table, columns: tuple[str, ...]) -> None:
        self.columns = columns
        chosen = [served.column(name) for name in columns]
        utf8 = served.utf8
        kinds = [codec(column.type, column, utf8) for column in chosen if column is not None]
        self.schema = pa.schema(
            [_field(column, kind) for column, kind in zip((c for c in chosen if c), kinds, strict=True)]
        )
        # The inner level: (SQL over the table, its name); and the LATERAL joins arrays need.
        self.inner: list[tuple[str, str]] = []
        self.laterals: list[tuple[str, str, tuple[str, ...]]] = []
        # The outer level: the SQL of each stream over the inner rows (stream 0: the records), and how
        # each reads back (the dtype of its records; None for bytes).
        self.streams: list[str] = [""]
        self.dtypes: list[np.dtype | None] = [None]
        # Which streams are text (aggregated with a text separator, sent as the text's bytes).
        self.texts: list[bool] = [False]
        rows = _Record([], [])
        self.slots = []
        for i, (column, kind) in enumerate(zip((c for c in chosen if c), kinds, strict=True)):
            ref = quote_identifier(column.name)
            if isinstance(kind, ListOf):
                self.slots.append(self._lay_out_array(i, ref, kind, column.nullable, rows))
                continue
            self.inner.append((kind.prepare(ref), f"_v{i}"))
            slot, data = _place(f"page._v{i}", kind, column.nullable, f"c{i}", rows)
            if data is not None:
                assert isinstance(kind, Var)
                slot.stream = self._stream(data, None, kind.text)
            self.slots.append(slot)
        self.streams[0], self.dtypes[0] = rows.sql, rows.dtype
        self.empty = pa.RecordBatch.from_pylist([], schema=self.schema)

    def _stream(self, sql: str, dtype: np.dtype | None, as_text: bool = False) -> int:
        self.streams.append(sql)
        self.dtypes.append(dtype)
        self.texts.append(as_text)
        return len(self.streams) - 1

    def _lay_out_array(self, i: int, ref: str, kind: ListOf, nullable: bool, rows: _Record) -> _Slot:
        """An array: its element count in the record, and its elements' records (and bytes) laid out per row
        by one LATERAL join over unnest (one subquery a row: a scalar subquery per stream cost four times it)."""
        self.inner.append((f"cardinality({ref})", f"_v{i}"))
        count = f"int4send(page._v{i})"
        rows.pieces.append(f"coalesce({count}, {_NULL})" if nullable else count)
        rows.fields.append((f"c{i}", ">i4"))
        elements = _Record([], [])
        element, data = _place(kind.element.prepare("_u._e"), kind.element, True, f"c{i}[]", elements)
        as_text = isinstance(kind.element, Var) and kind.element.text
        aggregates = [f"string_agg({elements.sql}, ''::bytea ORDER BY _o) AS r"]
        if data is not None:
            aggregates.append(f"string_agg({data}, {_separator(as_text)} ORDER BY _o) AS b")
        alias = f"_x{i}"
        self.laterals.append(
            (
                f"SELECT {', '.join(aggregates)} FROM unnest({ref}) WITH ORDINALITY AS _u(_e, _o)",
                alias,
                ("r", "b") if data is not None else ("r",),
            )
        )
        self.inner.append((f"{alias}.r", f"_r{i}"))
        records = self._stream(f"page._r{i}", elements.dtype)
        if data is not None:
            self.inner.append((f"{alias}.b", f"_b{i}"))
            element.stream = self._stream(f"page._b{i}", None, as_text)
        return _Slot(kind, None, f"c{i}", records, element)

    def batch(self, rows: int, streams: Sequence[bytes | memoryview]) -> pa.RecordBatch:
        if rows == 0:
            return self.empty
        records = self._records(streams, 0, rows)
        arrays = [self._array(slot, records, rows, streams) for slot in self.slots]
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _records(self, streams: Sequence[bytes | memoryview], index: int, count: int) -> np.ndarray:
        dtype = self.dtypes[index]
        assert dtype is not None
        data = streams[index]
        if len(data) != count * dtype.itemsize:
            raise ValueError("a page's records do not match its row count")
        return np.frombuffer(data, dtype=dtype, count=count)

    def _array(self, slot: _Slot, records: np.ndarray, count: int, streams: Sequence[bytes | memoryview]) -> pa.Array:
        kind = slot.codec
        if isinstance(kind, Fixed):
            valid = None if slot.flag is None else records[slot.flag] != 0
            values, finite = kind.convert(records[slot.value])
            if finite is not None:
                valid = finite if valid is None else valid & finite
            array = pa.Array.from_buffers(
                kind.extension.storage_type if kind.extension else kind.arrow_type,
                count,
                [_bitmap(valid), pa.py_buffer(values)],
                null_count=_nulls(valid),
            )
            return pa.ExtensionArray.from_storage(kind.extension, array) if kind.extension else array
        lengths = records[slot.value].astype(np.int32)
        valid = lengths >= 0
        offsets = np.zeros(count + 1, dtype=np.int32)
        np.cumsum(np.where(valid, lengths, 0), out=offsets[1:])
        validity = None if valid.all() else valid
        if isinstance(kind, Var):
            assert slot.stream is not None
            data = streams[slot.stream]
            if offsets[-1] != len(data):
                raise ValueError("a page's bytes do not match their lengths")
            array = pa.Array.from_buffers(
                kind.storage,
                count,
                [_bitmap(validity), pa.py_buffer(offsets), pa.py_buffer(data)],
                null_count=_nulls(validity),
            )
            return kind.finish(array) if kind.finish else array
        assert slot.stream is not None and slot.element is not None
        elements = int(offsets[-1])
        element_records = self._records(streams, slot.stream, elements)
        child = self._array(slot.element, element_records, elements, streams)
        return pa.Array.from_buffers(
            kind.arrow_type,
            count,
            [_bitmap(validity), pa.py_buffer(offsets)],
            null_count=_nulls(validity),
            children=[child],
        )

    # --- SQL ----------------------------------------------------------------------------------------

    def _rows(self, served: Table) -> Select:
        """The inner level: a row per table row, each value prepared once."""
        clause = table_clause(served)
        source = clause
        for sql, alias, names in self.laterals:
            joined = text(sql).columns(*(sql_column(name) for name in names)).lateral(alias)
            source = source.outerjoin(joined, true())
        keys = [clause.c[name].label(f"_k{i}") for i, name in enumerate(served.key)]
        values = [literal_column(sql).label(name) for sql, name in self.inner]
        return select(*keys, *values).select_from(source)

    def page_query(self, served: Table, bound: Bound) -> Select:
        """count(*), then every stream aggregated over the page's rows in key order (one row)."""
        page = bound(self._rows(served)).subquery("page")
        order = [page.c[f"_k{i}"] for i in range(len(served.key))]
        aggregates = []
        for sql, as_text in zip(self.streams, self.texts, strict=True):
            empty = literal_column(_separator(as_text))
            ordered = aggregate_order_by(empty, *order) if order else empty
            aggregates.append(func.string_agg(literal_column(sql), ordered))
        return select(cast(func.count(), Integer), *aggregates).select_from(page)

    def cursor_query(self, served: Table, where: str | None = None) -> Select:
        """Every row's streams (of the rows `where` keeps), a row each: what a cursor over a relation without
        a key fetches."""
        rows = self._rows(served)
        if where is not None:
            rows = rows.where(literal_column(where))
        page = rows.subquery("page")
        # A row's text as its bytes (asyncpg would hand text over as str).
        pairs = zip(self.streams, self.texts, strict=True)
        streams = (f"textsend({sql})" if as_text else sql for sql, as_text in pairs)
        return select(*(literal_column(sql).label(f"_s{i}") for i, sql in enumerate(streams))).select_from(page)

    # --- pages ----------------------------------------------------------------------------------------

    def cursor_page(self, records: Sequence[Sequence[bytes | None]]) -> tuple[int, memoryview]:
        """Rows fetched from the cursor (each its streams) as one IPC message, and how many they were."""
        streams = [b"".join(record[i] or b"" for record in records) for i in range(len(self.streams))]
        return len(records), memoryview(self.batch(len(records), streams).serialize())

    def rows(self, copied: bytes, copied_rows: int) -> int:
        """The page's rows: its count(*) (COPY itself reports the one row the page is folded into)."""
        if not copied_rows:
            return 0
        start, _ = _fields(copied, 1 + len(self.streams))[0]
        return int.from_bytes(copied[start : start + 4], "big")

    def page_bytes(self, copied: bytes, first: bool) -> memoryview:
        """The page as one IPC message (an encapsulated record batch)."""
        fields = _fields(copied, 1 + len(self.streams))
        view = memoryview(copied)
        rows = int.from_bytes(copied[fields[0][0] : fields[0][0] + 4], "big")
        streams = [view[at : at + size] for at, size in fields[1:]]
        # The serialized buffer itself, not a copy of it: a page of wide rows is megabytes.
        return memoryview(self.batch(rows, streams).serialize())


def _same(sql: str) -> str:
    return sql


def _separator(as_text: bool) -> str:
    """string_agg's separator: nothing, of the stream's type."""
    return "''" if as_text else "''::bytea"


def _field(column: Column, kind: Codec) -> pa.Field:
    """The column as an Arrow field: nullable where PostgreSQL may send NULL, or the type's conversion
    makes one (NaN in a decimal, an infinite date)."""
    makes_nulls = (isinstance(kind, Var) and kind.makes_nulls) or (isinstance(kind, Fixed) and kind.infinite)
    return pa.field(column.name, kind.arrow_type, column.nullable or makes_nulls)


def _bitmap(valid: np.ndarray | None) -> pa.Buffer | None:
    return None if valid is None or valid.all() else pa.py_buffer(np.packbits(valid, bitorder="little"))


def _nulls(valid: np.ndarray | None) -> int:
    return 0 if valid is None else int(len(valid) - np.count_nonzero(valid))


def _fields(copied: bytes, count: int) -> list[tuple[int, int]]:
    """(offset, length) of each field of the single row of a binary COPY (a loop over fields, not rows)."""
    if copied[:11] != _COPY_SIGNATURE:
        raise ValueError("not PostgreSQL's binary COPY output")
    position = 19 + int.from_bytes(copied[15:19], "big")  # past the header and its extension area
    if int.from_bytes(copied[position : position + 2], "big") != count:
        raise ValueError(f"expected one row of {count} fields")
    position += 2
    fields = []
    for _ in range(count):
        length = int.from_bytes(copied[position : position + 4], "big", signed=True)
        fields.append((position + 4, max(length, 0)))
        position += 4 + max(length, 0)
    return fields


def layout(served: Table, columns: tuple[str, ...]) -> Layout:
    decoder = PageDecoder(served, columns)
    return Layout(
        lambda bound: decoder.page_query(served, bound),
        {"format": "binary"},
        head=decoder.schema.serialize().to_pybytes(),
        tail=END_OF_STREAM,
        whole_pages=True,
        page_bytes=decoder.page_bytes,
        rows=decoder.rows,
        cursor_query=lambda where: decoder.cursor_query(served, where),
        cursor_page=decoder.cursor_page,
    )
