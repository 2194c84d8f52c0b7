"""The Arrow type of each PostgreSQL type, and how its values travel in a page (export.arrow folds them).

Fixed: a value of fixed width, sent in PostgreSQL's binary form (int8send...) and read by numpy. Var: a
value's bytes (text as UTF-8, bytea as it is), read as a string or binary array, then cast (a decimal)
or wrapped (an extension type). ListOf: an array's elements, flattened as ADBC reads them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..db.catalog import Column, PgType

# PostgreSQL counts time from 2000-01-01, Arrow from 1970-01-01.
POSTGRES_EPOCH_US = 946_684_800_000_000
POSTGRES_EPOCH_DAYS = 10_957
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
# char(n) keeps its padding (a cast to text would drop it): its send function writes it as it is.
_PADDED = Var(pa.utf8(), pa.utf8(), lambda value: f"bpcharsend({value})")


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
    if name == "bpchar":
        return _PADDED
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
