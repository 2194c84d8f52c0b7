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

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import Integer, Select, cast, func, literal_column, select
from sqlalchemy.dialects.postgresql import aggregate_order_by

from ..db.catalog import Column, PgType, Table
from ..db.statements import Bound, quote_identifier, table_clause
from .layout import Layout

# The IPC stream's end-of-stream marker: without it a reader knows the stream was cut short.
END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"
# PostgreSQL counts time from 2000-01-01, Arrow from 1970-01-01.
POSTGRES_EPOCH_US = 946_684_800_000_000
POSTGRES_EPOCH_DAYS = 10_957
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00"
_NULL = "'\\xffffffff'::bytea"
# interval_send's layout.
_INTERVAL = np.dtype([("micros", ">i8"), ("days", ">i4"), ("months", ">i4")])
_MONTH_DAY_NANO = np.dtype([("months", "<i4"), ("days", "<i4"), ("nanoseconds", "<i8")])

Convert = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray | None]]


def _native(values: np.ndarray) -> tuple[np.ndarray, None]:
    return values.astype(values.dtype.newbyteorder("=")), None


def _from_postgres_epoch(shift: int, bits: int) -> Convert:
    """Days or microseconds since 2000-01-01 as since 1970-01-01; ±infinity (the type's extremes) are null."""
    extremes = np.iinfo(np.int64 if bits == 64 else np.int32)

    def convert(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raw = values.astype(values.dtype.newbyteorder("=")).astype(np.int64)
        finite = (raw != extremes.max) & (raw != extremes.min)
        return np.where(finite, raw + shift, 0).astype(f"<i{bits // 8}"), finite

    return convert


def _boolean(values: np.ndarray) -> tuple[np.ndarray, None]:
    return np.packbits(values != 0, bitorder="little"), None


def _interval(values: np.ndarray) -> tuple[np.ndarray, None]:
    """(microseconds, days, months) as Arrow's month_day_nano (months, days, nanoseconds)."""
    out = np.empty(len(values), dtype=_MONTH_DAY_NANO)
    out["months"] = values["months"]
    out["days"] = values["days"]
    out["nanoseconds"] = values["micros"].astype(np.int64) * 1000
    return out, None


def _as_bytes(values: np.ndarray) -> tuple[np.ndarray, None]:
    return np.ascontiguousarray(values), None


@dataclass(frozen=True)
class Fixed:
    """A value of fixed width, sent by PostgreSQL's binary send function."""

    arrow_type: pa.DataType
    send: str
    # numpy's view of the sent bytes, and how they become the Arrow buffer (with any more nulls).
    dtype: np.dtype
    convert: Convert = _native
    # The storage array becomes this extension type (uuid).
    extension: pa.ExtensionType | None = None
    # ±infinity has no Arrow value: it becomes NULL.
    infinite: bool = False


@dataclass(frozen=True)
class Var:
    """A value of varying width: its length in the record, its bytes in a stream of their own."""

    arrow_type: pa.DataType
    # pa.utf8() or pa.binary(): how the bytes are read, before `finish` (a decimal cast, an extension).
    storage: pa.DataType
    # SQL for the value's bytes, given SQL for the value.
    to_bytes: Callable[[str], str]
    finish: Callable[[pa.Array], pa.Array] | None = None
    # The bytes may be NULL for a value that is not (NaN, which a decimal cannot hold).
    makes_nulls: bool = False


@dataclass(frozen=True)
class ListOf:
    """An array (flattened, as ADBC reads one): its element count in the record, its elements in streams."""

    element: Fixed | Var

    @property
    def arrow_type(self) -> pa.DataType:
        return pa.list_(self.element.arrow_type)


Codec = Fixed | Var | ListOf


def _utf8(value: str) -> str:
    return f"convert_to(({value})::text, 'UTF8')"


def _raw(value: str) -> str:
    return value


def _fixed(arrow_type: pa.DataType, send: str, dtype: str | np.dtype, convert: Convert = _native) -> Fixed:
    return Fixed(
        arrow_type, send, np.dtype(dtype), convert, infinite=send in ("date_send", "timestamp_send", "timestamptz_send")
    )


_FIXED: dict[str, Fixed] = {
    "int2": _fixed(pa.int16(), "int2send", ">i2"),
    "int4": _fixed(pa.int32(), "int4send", ">i4"),
    "int8": _fixed(pa.int64(), "int8send", ">i8"),
    "oid": _fixed(pa.uint32(), "oidsend", ">u4"),
    "money": _fixed(pa.int64(), "cash_send", ">i8"),
    "float4": _fixed(pa.float32(), "float4send", ">f4"),
    "float8": _fixed(pa.float64(), "float8send", ">f8"),
    "bool": _fixed(pa.bool_(), "boolsend", "u1", _boolean),
    "date": _fixed(pa.date32(), "date_send", ">i4", _from_postgres_epoch(POSTGRES_EPOCH_DAYS, 32)),
    "time": _fixed(pa.time64("us"), "time_send", ">i8"),
    "timestamp": _fixed(pa.timestamp("us"), "timestamp_send", ">i8", _from_postgres_epoch(POSTGRES_EPOCH_US, 64)),
    "timestamptz": _fixed(
        pa.timestamp("us", tz="UTC"), "timestamptz_send", ">i8", _from_postgres_epoch(POSTGRES_EPOCH_US, 64)
    ),
    "interval": _fixed(pa.month_day_nano_interval(), "interval_send", _INTERVAL, _interval),
    "uuid": Fixed(pa.uuid(), "uuid_send", np.dtype("V16"), _as_bytes, pa.uuid()),
}
_TEXT = Var(pa.utf8(), pa.utf8(), _utf8)


def _cast_to(arrow_type: pa.DataType) -> Callable[[pa.Array], pa.Array]:
    return lambda text: pc.cast(text, arrow_type)


def _wrapped(arrow_type: pa.ExtensionType) -> Callable[[pa.Array], pa.Array]:
    return lambda storage: pa.ExtensionArray.from_storage(arrow_type, storage)


def codec(pg_type: PgType, column: Column | None = None) -> Codec:
    """How a value of the type travels in a page and becomes Arrow (every type has one: its text at worst)."""
    if pg_type.category == "A" and pg_type.element is not None:
        element = codec(pg_type.element)
        return ListOf(_TEXT if isinstance(element, ListOf) else element)
    name = pg_type.builtin
    if name in _FIXED:
        return _FIXED[name]
    if name == "bytea":
        return Var(pa.binary(), pa.binary(), _raw)
    if name in ("json", "jsonb"):
        return Var(pa.json_(pa.utf8()), pa.utf8(), _utf8, _wrapped(pa.json_(pa.utf8())))
    if name == "numeric":
        precision = None if column is None else column.numeric_precision
        if precision is not None and precision[0] <= 38 and precision[1] >= 0:
            decimal = pa.decimal128(*precision)
            # A decimal has no NaN: NaN becomes NULL (docs/types.md).
            nan_free = lambda value: _utf8(f"nullif({value}, 'NaN'::numeric)")  # noqa: E731
            return Var(decimal, pa.utf8(), nan_free, _cast_to(decimal), makes_nulls=True)
        opaque = pa.opaque(pa.utf8(), "numeric", "PostgreSQL")
        return Var(opaque, pa.utf8(), _utf8, _wrapped(opaque))
    return _TEXT


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


class _Streams:
    """The SQL of each stream a page is folded into (stream 0: the rows' records), and how each reads back:
    the dtype of its records, or None for a stream of bytes."""

    def __init__(self) -> None:
        self.sql: list[str] = []
        self.dtypes: list[np.dtype | None] = []

    def add(self, sql: str = "", dtype: np.dtype | None = None) -> int:
        self.sql.append(sql)
        self.dtypes.append(dtype)
        return len(self.sql) - 1

    def place(
        self, value: str, kind: Codec, nullable: bool, name: str, record: _Record, per_row: Callable[[str], str]
    ) -> _Slot:
        """Lay a value out in `record` and in streams of its own; `per_row` turns SQL per value into SQL per
        row (the identity for a column; an aggregate over its elements for an array's)."""
        if isinstance(kind, Fixed):
            flag = None
            sent = f"{kind.send}({value})"
            if nullable:
                flag = name + ".null"
                record.pieces.append(f"CASE WHEN ({value}) IS NULL THEN '\\x00'::bytea ELSE '\\x01'::bytea END")
                record.fields.append((flag, "u1"))
                sent = f"coalesce({sent}, '\\x{'00' * kind.dtype.itemsize}'::bytea)"
            record.pieces.append(sent)
            record.fields.append((name, kind.dtype))
            return _Slot(kind, flag, name)
        if isinstance(kind, Var):
            data = kind.to_bytes(value)
            length = f"int4send(octet_length({data}))"
            record.pieces.append(f"coalesce({length}, {_NULL})" if nullable or kind.makes_nulls else length)
            record.fields.append((name, ">i4"))
            return _Slot(kind, None, name, self.add(per_row(data)))
        count = f"int4send(cardinality({value}))"
        record.pieces.append(f"coalesce({count}, {_NULL})" if nullable else count)
        record.fields.append((name, ">i4"))

        def per_element(sql: str) -> str:
            return (
                f"(SELECT string_agg({sql}, ''::bytea ORDER BY _o) FROM unnest({value}) WITH ORDINALITY AS _u(_e, _o))"
            )

        records = self.add()  # its SQL once the elements' own streams are laid out
        elements = _Record([], [])
        element = self.place("_u._e", kind.element, True, name + "[]", elements, per_element)
        self.sql[records], self.dtypes[records] = per_element(elements.sql), elements.dtype
        return _Slot(kind, None, name, records, element)


class PageDecoder:
    """A page's streams (as PostgreSQL folded them) as a RecordBatch."""

    def __init__(self, served: Table, columns: tuple[str, ...]) -> None:
        self.columns = columns
        chosen = [served.column(name) for name in columns]
        self.schema = pa.schema([_field(column, codec(column.type, column)) for column in chosen if column is not None])
        self.streams = _Streams()
        self.streams.add()  # stream 0: the rows' records, laid out below
        rows = _Record([], [])
        self.slots = [
            self.streams.place(
                quote_identifier(name), codec(column.type, column), column.nullable, f"c{i}", rows, _same
            )
            for i, (name, column) in enumerate(zip(columns, chosen, strict=True))
            if column is not None
        ]
        self.streams.sql[0], self.streams.dtypes[0] = rows.sql, rows.dtype
        self.empty = pa.RecordBatch.from_pylist([], schema=self.schema)

    def batch(self, rows: int, streams: Sequence[bytes | memoryview]) -> pa.RecordBatch:
        if rows == 0:
            return self.empty
        records = self._records(streams, 0, rows)
        arrays = [self._array(slot, records, rows, streams) for slot in self.slots]
        return pa.RecordBatch.from_arrays(arrays, schema=self.schema)

    def _records(self, streams: Sequence[bytes | memoryview], index: int, count: int) -> np.ndarray:
        dtype = self.streams.dtypes[index]
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

    def page_query(self, served: Table, bound: Bound) -> Select:
        """count(*), then every stream aggregated over the page's rows in key order (one row)."""
        clause = table_clause(served)
        keys = [clause.c[name].label(f"_k{i}") for i, name in enumerate(served.key)]
        parts = [literal_column(sql).label(f"_s{i}") for i, sql in enumerate(self.streams.sql)]
        page = bound(select(*keys, *parts).select_from(clause)).subquery("page")
        order = [page.c[f"_k{i}"] for i in range(len(served.key))]
        empty = literal_column("''::bytea")
        aggregates = [
            func.string_agg(page.c[f"_s{i}"], aggregate_order_by(empty, *order) if order else empty)
            for i in range(len(self.streams.sql))
        ]
        return select(cast(func.count(), Integer), *aggregates)

    def cursor_query(self, served: Table) -> Select:
        """Every row's streams, a row each: what a cursor over a relation without a key fetches."""
        parts = [literal_column(sql).label(f"_s{i}") for i, sql in enumerate(self.streams.sql)]
        return select(*parts).select_from(table_clause(served))

    # --- pages ----------------------------------------------------------------------------------------

    def cursor_page(self, records: Sequence[Sequence[bytes | None]]) -> tuple[int, bytes]:
        """Rows fetched from the cursor (each its streams) as one IPC message, and how many they were."""
        streams = [b"".join(record[i] or b"" for record in records) for i in range(len(self.streams.sql))]
        return len(records), self.batch(len(records), streams).serialize().to_pybytes()

    def rows(self, copied: bytes, copied_rows: int) -> int:
        """The page's rows: its count(*) (COPY itself reports the one row the page is folded into)."""
        if not copied_rows:
            return 0
        start, _ = _fields(copied, 1 + len(self.streams.sql))[0]
        return int.from_bytes(copied[start : start + 4], "big")

    def page_bytes(self, copied: bytes, first: bool) -> bytes:
        """The page as one IPC message (an encapsulated record batch)."""
        fields = _fields(copied, 1 + len(self.streams.sql))
        view = memoryview(copied)
        rows = int.from_bytes(copied[fields[0][0] : fields[0][0] + 4], "big")
        streams = [view[at : at + size] for at, size in fields[1:]]
        return self.batch(rows, streams).serialize().to_pybytes()


def _same(sql: str) -> str:
    return sql


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
        cursor_query=lambda: decoder.cursor_query(served),
        cursor_page=decoder.cursor_page,
    )
