"""The type contract of the text formats: how PostgreSQL writes each column's value in JSON and in CSV.

One rule per type, applied by PostgreSQL itself in the page's query (no Python per row), and
independent of the database's settings: the pool pins TimeZone (UTC), DateStyle (ISO), IntervalStyle
(iso_8601), extra_float_digits and bytea_output on every connection (db.pool), and what they do not
reach is written here explicitly. docs/types.md is the table a consumer reads.

JSON: numbers bare (a double always with a fraction or an exponent, so tools type it as a float),
NaN and infinities as the strings PostgreSQL's own to_json writes ("NaN", "Infinity", "-Infinity"),
json and jsonb embedded as JSON, arrays as JSON arrays, everything else a JSON string.
CSV: PostgreSQL's text form (COPY's CSV mode quotes it), but doubles as in JSON, booleans as
true/false, bytea as \\x and hex, arrays as JSON text.
"""

from __future__ import annotations

import json

from sqlalchemy import Numeric, Text, case, cast, func, literal_column
from sqlalchemy.sql import ColumnElement

from ..db.catalog import Column

# Below these, PostgreSQL writes an integral double without a fraction or an exponent ("5"): add ".0".
_PLAIN_INTEGRAL_BELOW = {"float8": "1e15", "float4": "1e6"}
_NUMBERS = frozenset(("int2", "int4", "int8", "oid"))
# PostgreSQL's to_json already writes these as this contract wants them.
_TO_JSON = frozenset(
    (
        *("numeric", "bool", "text", "varchar", "bpchar", "name", "uuid", "inet", "cidr", "macaddr", "macaddr8"),
        *("date", "time", "timetz", "timestamp", "timestamptz", "interval"),
    )
)


def constant(text: str) -> ColumnElement[str]:
    """A text constant of the service's own, written into the SQL with its quotes doubled (the pool keeps
    standard_conforming_strings on, so a backslash is just a backslash)."""
    return literal_column("'" + text.replace("'", "''") + "'", Text)


def _kind(column: Column) -> str:
    """The rule a column's type falls under."""
    pg_type = column.type
    if pg_type.category == "A":
        return "array"
    if pg_type.kind == "e":
        return "enum"
    name = pg_type.builtin
    if name in _NUMBERS or name in _PLAIN_INTEGRAL_BELOW or name in _TO_JSON:
        return name  # type: ignore[return-value]
    if name in ("json", "jsonb", "bytea", "money", "char"):
        return name
    return "other"


def concat(*parts: ColumnElement) -> ColumnElement[str]:
    """parts joined with PostgreSQL's || (NULL if any part is NULL)."""
    joined = parts[0]
    for part in parts[1:]:
        joined = joined.op("||", return_type=Text)(part)
    return joined


def _double_text(value: ColumnElement, name: str, otherwise: ColumnElement) -> ColumnElement[str]:
    """A double's shortest exact text, with ".0" where that is an integer's digits ("5" -> "5.0", "-0" ->
    "-0.0"). Non-integral values take the plain text at once (one comparison: the common case); NaN and
    the infinities equal their trunc() in PostgreSQL but fail the size test and take `otherwise`."""
    limit = literal_column(f"'{_PLAIN_INTEGRAL_BELOW[name]}'::{name}")
    integral = case((func.abs(value) < limit, concat(cast(value, Text), constant(".0"))), else_=otherwise)
    return case((value == func.trunc(value), integral), else_=cast(value, Text))


def json_value(column: Column, value: ColumnElement) -> ColumnElement[str]:
    """The value's JSON text; never NULL (a NULL is the text null)."""
    kind = _kind(column)
    rendered: ColumnElement[str]
    if kind in _NUMBERS:
        rendered = cast(value, Text)
    elif kind in _PLAIN_INTEGRAL_BELOW:
        rendered = _double_text(value, kind, cast(func.to_json(value), Text))
    elif kind == "array":
        rendered = cast(func.array_to_json(value), Text)  # to_json's own output, without its dispatch
    elif kind in _TO_JSON or kind == "enum":
        rendered = cast(func.to_json(value), Text)
    elif kind == "json":
        # Raw newlines can only be whitespace between tokens (JSON strings escape them): one line per row.
        text = cast(value, Text)
        rendered = func.replace(
            func.replace(text, constant("\n"), constant(" "), type_=Text), constant("\r"), constant(" "), type_=Text
        )
    elif kind == "jsonb":
        rendered = cast(value, Text)
    elif kind == "bytea":
        rendered = concat(constant('"\\\\x'), func.encode(value, constant("hex"), type_=Text), constant('"'))
    elif kind == "money":
        # As a number: money's own text follows lc_monetary.
        rendered = cast(func.to_json(cast(value, Numeric)), Text)
    else:
        rendered = cast(func.to_json(cast(value, Text)), Text)
    return func.coalesce(rendered, constant("null"), type_=Text) if column.nullable else rendered


def csv_value(column: Column, value: ColumnElement) -> ColumnElement:
    """What COPY's CSV mode writes for the column: the value itself where its text form is the contract;
    NULL stays NULL (an unquoted empty field; an empty string is quoted)."""
    kind = _kind(column)
    if kind in _PLAIN_INTEGRAL_BELOW:
        return _double_text(value, kind, cast(value, Text))
    if kind == "bool":
        return case((value, constant("true")), (~value, constant("false")))
    if kind == "array":
        return cast(func.array_to_json(value), Text)
    if kind == "bytea":
        return concat(constant("\\x"), func.encode(value, constant("hex"), type_=Text))
    if kind == "money":
        return cast(value, Numeric)
    return value


def json_key(name: str) -> str:
    """A column's name as a JSON object key (escaped as JSON escapes it)."""
    return json.dumps(name, ensure_ascii=False)


_STRING = {"type": "string"}


def json_schema(column: Column) -> dict[str, object]:
    """The JSON Schema of the column's values in NDJSON and JSON (OpenAPI 3.1 reads it as it is)."""
    kind = _kind(column)
    schema: dict[str, object]
    if kind in _NUMBERS:
        schema = {"type": "integer"}
    elif kind in _PLAIN_INTEGRAL_BELOW or kind in ("numeric", "money"):
        # NaN and the infinities are strings: a JSON number cannot hold them.
        schema = {"oneOf": [{"type": "number"}, {"type": "string", "enum": ["NaN", "Infinity", "-Infinity"]}]}
    elif kind == "bool":
        schema = {"type": "boolean"}
    elif kind in ("json", "jsonb"):
        schema = {}  # any JSON value
    elif kind == "array":
        schema = {"type": "array"}
    elif kind == "uuid":
        schema = {"type": "string", "format": "uuid"}
    elif kind == "date":
        schema = {"type": "string", "format": "date"}
    elif kind in ("timestamp", "timestamptz"):
        schema = {"type": "string", "format": "date-time"}
    elif kind == "interval":
        schema = {"type": "string", "format": "duration"}
    elif kind == "bytea":
        schema = {"type": "string", "pattern": "^\\\\x([0-9a-f]{2})*$"}
    else:
        schema = dict(_STRING)
    if column.nullable and schema:  # {} (any JSON value) takes null already
        schema = {"anyOf": [schema, {"type": "null"}]}
    return {**schema, "description": column.declared}
