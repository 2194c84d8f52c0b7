"""The Arrow type of each PostgreSQL type, and how its values travel in a page (export.arrow folds them).

Fixed: a value of fixed width, sent in PostgreSQL's binary form (int8send...) and read by numpy. Var: a
value's bytes (text as UTF-8, bytea as it is), read as a string or binary array, then cast (a decimal)
or wrapped (an extension type). ListOf: an array's elements, flattened as ADBC reads them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

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


def _identity(value: str) -> str:
    return value


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
    # SQL computed once per row from the column, that `send` then writes (a decimal's scaled integer).
    prepare: Callable[[str], str] = _identity
    # The prepared value may be NULL where the column's is not (NaN, which a decimal cannot hold).
    makes_nulls: bool = False


@dataclass(frozen=True)
class Var:
    """A value of varying width: its length in the record, its bytes in a stream of their own."""

    arrow_type: pa.DataType
    # pa.utf8() or pa.binary(): how the bytes are read, before `finish` (a decimal cast, an extension).
    storage: pa.DataType
    # SQL computed once per row from the column (its text, say); then, from that, its bytes and length.
    prepare: Callable[[str], str]
    to_bytes: Callable[[str], str]
    length: Callable[[str], str] = field(default=lambda value: f"octet_length({value})")
    finish: Callable[[pa.Array], pa.Array] | None = None
    makes_nulls: bool = False
    # The bytes are a text value's, aggregated as text: the page's text is sent once, in the client's encoding,
    # not each value made into bytes first (textsend): 7% of PostgreSQL's work on orders' pages.
    text: bool = False


@dataclass(frozen=True)
class ListOf:
    """An array (flattened, as ADBC reads one): its element count in the record, its elements in streams."""

    element: Fixed | Var

    @property
    def arrow_type(self) -> pa.DataType:
        return pa.list_(self.element.arrow_type)


Codec = Fixed | Var | ListOf


def _fixed(arrow_type: pa.DataType, send: str, dtype: str | np.dtype, convert: Convert = _native) -> Fixed:
    infinite = send in ("date_send", "timestamp_send", "timestamptz_send")
    return Fixed(arrow_type, send, np.dtype(dtype), convert, infinite=infinite)


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


def _text(utf8: bool, send: str = "textsend") -> Var:
    """Text of any kind: in a UTF-8 database its own bytes (send writes them in the client's encoding,
    UTF-8 too, and octet_length counts them); elsewhere converted to UTF-8 once."""
    if utf8:
        if send == "textsend":
            return Var(pa.utf8(), pa.utf8(), _identity, _identity, text=True)
        return Var(pa.utf8(), pa.utf8(), _identity, lambda value: f"{send}({value})")
    return Var(pa.utf8(), pa.utf8(), lambda value: f"convert_to(({value})::text, 'UTF8')", _identity)


def _as_text(kind: Var) -> Var:
    """A type read by its text form (json, numeric, ranges...): the text made once per row."""
    return replace(kind, prepare=lambda value: kind.prepare(f"({value})::text"))


def _cast_to(arrow_type: pa.DataType) -> Callable[[pa.Array], pa.Array]:
    return lambda text: pc.cast(text, arrow_type)


def _wrapped(arrow_type: pa.ExtensionType) -> Callable[[pa.Array], pa.Array]:
    return lambda storage: pa.ExtensionArray.from_storage(arrow_type, storage)


def _decimal_from_int64(values: np.ndarray) -> tuple[np.ndarray, None]:
    """Scaled integers as decimal128's 16-byte little-endian two's complement (the high half the sign)."""
    low = values.astype("<i8")
    out = np.empty(len(low) * 2, dtype="<i8")
    out[0::2] = low
    out[1::2] = low >> 63
    return out, None


def _decimal(precision: int, scale: int, utf8: bool) -> Codec:
    """numeric(p, s) as decimal128(p, s). Up to 18 digits it travels as its scaled integer (int8send: half
    the work of numeric's text); beyond, as its text, cast by pyarrow. A decimal has no NaN: it is NULL."""
    decimal = pa.decimal128(precision, scale)
    nan_free = "nullif({}, 'NaN'::numeric)"
    if precision <= 18:
        scaled = lambda value: f"({nan_free.format(value)} * {10**scale})::int8"  # noqa: E731
        return Fixed(decimal, "int8send", np.dtype(">i8"), _decimal_from_int64, prepare=scaled, makes_nulls=True)
    text = _as_text(_text(utf8))
    return replace(
        text,
        arrow_type=decimal,
        prepare=lambda value: text.prepare(nan_free.format(value)),
        finish=_cast_to(decimal),
        makes_nulls=True,
    )


def codec(pg_type: PgType, column: Column | None = None, utf8: bool = True) -> Codec:
    """How a value of the type travels in a page and becomes Arrow (every type has one: its text at worst)."""
    if pg_type.category == "A" and pg_type.element is not None:
        element = codec(pg_type.element, utf8=utf8)
        return ListOf(_as_text(_text(utf8)) if isinstance(element, ListOf) else element)
    name = pg_type.builtin
    if name in _FIXED:
        return _FIXED[name]
    if name == "bpchar":
        # char(n) keeps its padding (a cast to text would drop it).
        if utf8:
            return _text(utf8, "bpcharsend")
        return replace(_text(utf8), prepare=lambda value: f"convert_to(textin(bpcharout({value})), 'UTF8')")
    if name in ("text", "varchar"):
        return _text(utf8)
    if name == "bytea":
        return Var(pa.binary(), pa.binary(), _identity, _identity)
    if name in ("json", "jsonb"):
        return replace(_as_text(_text(utf8)), arrow_type=pa.json_(pa.utf8()), finish=_wrapped(pa.json_(pa.utf8())))
    if name == "numeric":
        precision = None if column is None else column.numeric_precision
        if precision is not None and precision[0] <= 38 and precision[1] >= 0:
            return _decimal(*precision, utf8)
        opaque = pa.opaque(pa.utf8(), "numeric", "PostgreSQL")
        return replace(_as_text(_text(utf8)), arrow_type=opaque, finish=_wrapped(opaque))
    return _as_text(_text(utf8))
