"""Filters: PostgREST's operators on a served table's columns, read from a request's query and written into
every statement of its export (the pages, their plans, the row count).

    ?value=gte.10&label=like.point-1*&id=not.in.(3,4)&recorded_at=is.null

A filter is `[not.]operator.value` under a column's name; several are ANDed. A value is read as its
column's type by PostgreSQL (docs/filters.md has the whole language).

Safe SQL. A page is a COPY, which takes no bound parameters, so a filter is written into the statement,
and no request text reaches it but as one of these:
- an identifier from the reflected catalog (the request's name must equal a column's), always quoted;
- an operator from this module's own table (the request only chooses which);
- a value as PostgreSQL itself quoted it: the request's text is sent as a bound parameter to
  `quote_literal(CAST(CAST($1 AS text) AS <the column's type>))`, which reads it as the type (a bad value
  is an error there, before the export) and writes the typed value back as a literal for the session's
  own settings (standard_conforming_strings included: E'...' where a backslash needs it);
- an integer checked here (ASCII digits within the type's range), written as its digits; a double's or
  a numeric's plain decimal text checked here (digits, a point, an exponent: nothing to escape), quoted.
The literal is then cast to the column's type by name from the catalog, so it is never read as anything else.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import asyncpg
from sqlalchemy import false, literal_column, not_, null, select, true
from sqlalchemy.sql import ColumnElement, FromClause

from .catalog import Column, Table
from .statements import INTEGER_MAX, quote_identifier, sql_text, table_clause

COMPARISONS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
OPERATORS = (*COMPARISONS, "in", "is", "like", "ilike")
# What `is.` takes: null and not_null on any column, true, false and unknown on a boolean one.
IS_KEYWORDS = ("null", "not_null", "true", "false", "unknown")
_BOOLEAN_KEYWORDS = ("true", "false", "unknown")
# Plain ASCII digits: read here; any other integer text (" 1", "1_000", "0x1F") goes to PostgreSQL.
_INTEGER = re.compile(r"-?[0-9]{1,19}")
# A plain decimal number, as a double or a numeric reads it: read here; anything else goes to PostgreSQL.
_DECIMAL = re.compile(r"-?(?:[0-9]{1,40}(?:\.[0-9]{0,40})?|\.[0-9]{1,40})(?:[eE][-+]?[0-9]{1,3})?")
_SHOWN = 60
# What PostgreSQL says of a value or an operator the request got wrong (not of the database): a 400.
REQUEST_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    asyncpg.UndefinedFunctionError,
    asyncpg.DatatypeMismatchError,
    asyncpg.AmbiguousFunctionError,
    asyncpg.CannotCoerceError,
    asyncpg.IndeterminateDatatypeError,
)


class FilterError(ValueError):
    """A filter the request got wrong: its parameter, and what is wrong (a 400 names both)."""

    def __init__(self, parameter: str, detail: str, column: Column | None = None) -> None:
        super().__init__(f"{parameter}: {detail}")
        self.parameter = parameter
        self.detail = detail
        self.column = column


@dataclass(frozen=True)
class Filter:
    """One filter as the request gave it, and its values as SQL literals once they are checked."""

    # The query parameter that named it (for errors), and the column it names (exactly as the catalog does).
    parameter: str
    column: str
    operator: str
    negated: bool
    # The request's text: the value of a comparison, the items of in, the pattern of like/ilike (its `*`
    # already `%`), the keyword of is.
    values: tuple[str, ...]
    # The values as SQL literals (PostgreSQL's quote_literal, or an integer's digits); None until checked.
    literals: tuple[str, ...] | None = None

    @property
    def checked(self) -> bool:
        return self.literals is not None


def shown(text: str) -> str:
    return repr(text[:_SHOWN]) + ("..." if len(text) > _SHOWN else "")


def column_named(parameter: str, served: Table) -> Column | None:
    """The column a parameter names: its exact name, or in double quotes (a quote inside doubled), which
    always means a column, even one named like a parameter of the endpoint ("limit")."""
    if len(parameter) >= 2 and parameter.startswith('"') and parameter.endswith('"'):
        inner = parameter[1:-1]
        if '"' in inner.replace('""', ""):
            return None
        return served.column(inner.replace('""', '"'))
    return served.column(parameter)


def is_quoted(parameter: str) -> bool:
    return len(parameter) >= 2 and parameter.startswith('"') and parameter.endswith('"')


def parse_filter(parameter: str, column: Column, raw: str) -> Filter:
    """`[not.]operator.value` on `column`; FilterError if it is not one."""
    _usable(parameter, raw, "the filter", column)
    negated = raw.startswith("not.")
    rest = raw[4:] if negated else raw
    operator, dot, value = rest.partition(".")
    if operator not in OPERATORS or not dot:
        raise FilterError(
            parameter,
            f"a filter is [not.]operator.value, the operator one of {', '.join(OPERATORS)} "
            f"(e.g. {parameter}=eq.5); got {shown(raw)}",
            column,
        )
    if operator == "is":
        if value not in IS_KEYWORDS:
            raise FilterError(parameter, f"is takes one of {', '.join(IS_KEYWORDS)}; got {shown(value)}", column)
        if value in _BOOLEAN_KEYWORDS and column.type.builtin != "bool":
            detail = f"is.{value} is for a boolean column; {column.name} is {column.declared}"
            raise FilterError(parameter, detail, column)
        return Filter(parameter, column.name, operator, negated, (value,), (value,))
    if operator in ("like", "ilike"):
        if column.type.category != "S":
            raise FilterError(parameter, f"{operator} is for a text column; {column.name} is {column.declared}", column)
        return Filter(parameter, column.name, operator, negated, (like_pattern(parameter, value, column),))
    values = in_items(parameter, value, column) if operator == "in" else (value,)
    literals = _read_here(column, values)
    return Filter(parameter, column.name, operator, negated, values, literals)


def _usable(parameter: str, text: str, what: str, column: Column) -> None:
    """Text PostgreSQL can take at all: no NUL (its text type cannot hold one), valid Unicode."""
    if "\x00" in text:
        raise FilterError(parameter, f"{what} holds a NUL character, which no PostgreSQL text can", column)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise FilterError(parameter, f"{what} is not valid UTF-8", column) from None


def _read_here(column: Column, values: tuple[str, ...]) -> tuple[str, ...] | None:
    """The values as literals when each is plainly a number the column's type reads (no statement needed to
    check them): an integer's digits within its range; a double's or a numeric's decimal text, quoted (it
    holds nothing but digits, a point, an exponent and signs), when PostgreSQL reads it without overflow.
    Else None: PostgreSQL reads them, and says what is wrong."""
    if not values:
        return ()
    name = column.type.builtin or ""
    top = INTEGER_MAX.get(name)
    if top is not None:
        if all(_INTEGER.fullmatch(value) and -top - 1 <= int(value) <= top for value in values):
            return tuple(str(int(value)) for value in values)
        return None
    if name in ("float8", "numeric") and all(_DECIMAL.fullmatch(value) for value in values):
        if name == "float8" and not all(_finite_double(value) for value in values):
            return None
        return tuple(f"'{value}'" for value in values)
    return None


def _finite_double(text: str) -> bool:
    """Whether a decimal text reads as a double without overflow or underflow (which PostgreSQL refuses)."""
    number = float(text)
    mantissa = text.lower().partition("e")[0]
    return not math.isinf(number) and (number != 0 or not any(digit in mantissa for digit in "123456789"))


def like_pattern(parameter: str, value: str, column: Column) -> str:
    """PostgREST's pattern as PostgreSQL's LIKE takes it: `*` is `%` (any run of characters); `%` and `_`
    keep their meaning; a backslash makes the next character literal (`\\*` a star)."""
    out = []
    index = 0
    while index < len(value):
        char = value[index]
        if char == "\\":
            if index + 1 == len(value):
                raise FilterError(parameter, "a like pattern cannot end with a lone backslash (write \\\\)", column)
            out.append(value[index : index + 2])
            index += 2
            continue
        out.append("%" if char == "*" else char)
        index += 1
    return "".join(out)


def in_items(parameter: str, value: str, column: Column) -> tuple[str, ...]:
    """in.(a,b,"c,d"): items separated by commas; an item holding a comma, a parenthesis or a quote in
    double quotes, where a backslash makes the next character literal (\\" a quote); () is no item."""
    if not (value.startswith("(") and value.endswith(")")) or len(value) < 2:
        raise FilterError(parameter, f'in takes a list in parentheses, in.(a,b,"c,d"); got {shown(value)}', column)
    inner = value[1:-1]
    if not inner:
        return ()
    items: list[str] = []
    index = 0
    while True:
        if inner.startswith('"', index):
            item: list[str] = []
            index += 1
            while True:
                if index >= len(inner):
                    raise FilterError(parameter, "a double quote in the in list is not closed", column)
                char = inner[index]
                if char == "\\" and index + 1 < len(inner):
                    item.append(inner[index + 1])
                    index += 2
                elif char == '"':
                    index += 1
                    break
                else:
                    item.append(char)
                    index += 1
            items.append("".join(item))
            if index < len(inner) and inner[index] != ",":
                raise FilterError(parameter, "a quoted item of the in list must be followed by a comma or ')'", column)
        else:
            comma = inner.find(",", index)
            end = len(inner) if comma < 0 else comma
            items.append(inner[index:end])
            index = end
        if index >= len(inner):
            return tuple(items)
        index += 1  # past the comma


def type_name(column: Column) -> str:
    """The column's type (under any domain) as SQL names it: schema and name from the catalog, quoted."""
    return f"{quote_identifier(column.type.schema)}.{quote_identifier(column.type.name)}"


def _expression(
    operator: str, negated: bool, subject: ColumnElement, values: Sequence[ColumnElement], keyword: str | None = None
) -> ColumnElement[bool]:
    """The condition on `subject`: the one place an operator becomes SQL, for the export and for its check."""
    condition: ColumnElement[bool]
    if operator in COMPARISONS:
        condition = subject.op(COMPARISONS[operator], is_comparison=True)(values[0])
    elif operator == "in":
        condition = subject.in_(list(values)) if values else false()
    elif operator == "like":
        condition = subject.like(values[0])
    elif operator == "ilike":
        condition = subject.ilike(values[0])
    elif keyword == "not_null":
        condition = subject.is_not(null())
    elif keyword in ("null", "unknown"):  # a boolean IS UNKNOWN exactly when it IS NULL
        condition = subject.is_(null())
    else:
        condition = subject.is_(true() if keyword == "true" else false())
    return not_(condition) if negated else condition


def _typed(literal: str, column: Column, operator: str) -> ColumnElement:
    """A checked literal as the statement writes it: cast to the column's type (a like pattern stays text)."""
    if operator in ("like", "ilike"):
        return literal_column(literal)
    return literal_column(f"CAST({literal} AS {type_name(column)})")


@dataclass(frozen=True)
class Where:
    """An export's filters, every value checked: the condition its statements add, written once."""

    served: Table
    filters: tuple[Filter, ...]

    def __post_init__(self) -> None:
        assert self.filters and all(f.checked for f in self.filters)

    def condition(self, source: FromClause) -> ColumnElement[bool]:
        conditions = []
        for f in self.filters:
            column = self.served.column(f.column)
            assert column is not None and f.literals is not None
            keyword = f.literals[0] if f.operator == "is" else None
            values = [] if keyword else [_typed(literal, column, f.operator) for literal in f.literals]
            conditions.append(_expression(f.operator, f.negated, source.c[f.column], values, keyword))
        joined = conditions[0]
        for condition in conditions[1:]:
            joined = joined & condition
        return joined

    @cached_property
    def sql(self) -> str:
        """The condition over the table as a page's statement names it ("schema"."table"."column")."""
        return "(" + sql_text(self.condition(table_clause(self.served))) + ")"

    @cached_property
    def plan_sql(self) -> str:
        """The condition over the table aliased t, as the page plan names it."""
        return "(" + sql_text(self.condition(table_clause(self.served).alias("t"))) + ")"

    def key_floor(self) -> int | None:
        """The largest integer below every row these filters keep, from those on an integer key (>, >=, =,
        in): where the export's first id range may start."""
        served = self.served
        if not served.integer_key:
            return None
        floors = []
        for f in self.filters:
            if f.column != served.key[0] or f.negated or f.literals is None or not f.literals:
                continue
            if f.operator in ("eq", "in", "gt", "gte"):
                # An integer's literal: its digits, or PostgreSQL's quote_literal of it ('42').
                lowest = min(int(literal.strip("'")) for literal in f.literals)
                floors.append(lowest if f.operator == "gt" else lowest - 1)
        return max(floors) if floors else None


def check_sql(served: Table, filters: Sequence[Filter]) -> tuple[str, list[str]]:
    """The statement that reads the filters' values as their columns' types and writes each back as
    PostgreSQL's literal (one column each, in order), with each filter's operator applied to NULLs of those
    types (so an operator the type lacks is an error here, not in the export); and its arguments."""
    arguments: list[str] = []
    selected = []
    for f in filters:
        column = served.column(f.column)
        assert column is not None and f.operator != "is"
        as_text = f.operator in ("like", "ilike")
        for value in f.values:
            arguments.append(value)
            read = f"CAST(${len(arguments)} AS text)"
            typed = read if as_text else f"CAST({read} AS {type_name(column)})"
            selected.append(literal_column(f"quote_literal({typed})"))
        typed_null = literal_column(f"CAST(NULL AS {type_name(column)})")
        value_null = literal_column("CAST(NULL AS text)") if as_text else typed_null
        check = _expression(f.operator, False, typed_null, [value_null] * min(1, len(f.values)))
        selected.append(check.is_(null()))
    return sql_text(select(*selected)), arguments


async def check(conn: asyncpg.Connection, served: Table, filters: tuple[Filter, ...]) -> tuple[Filter, ...]:
    """The filters with their values as PostgreSQL's literals; FilterError naming the first that PostgreSQL
    cannot read as its column's type, or whose operator its type does not have."""
    unchecked = [f for f in filters if not f.checked]
    if not unchecked:
        return filters
    try:
        literals = await _literals(conn, served, unchecked)
    except REQUEST_ERRORS as exc:
        # One statement for all: which filter it was is found one at a time (a 400's path only).
        for f in unchecked:
            try:
                await _literals(conn, served, [f])
            except REQUEST_ERRORS as alone:
                column = served.column(f.column)
                assert column is not None
                reason = str(alone).splitlines()[0]
                raise FilterError(
                    f.parameter, f"{reason} (the column {column.name} is {column.declared})", column
                ) from None
        raise FilterError(unchecked[0].parameter, str(exc).splitlines()[0]) from None
    done = iter(literals)
    return tuple(f if f.checked else _with_literals(f, next(done)) for f in filters)


def _with_literals(f: Filter, literals: tuple[str, ...]) -> Filter:
    return Filter(f.parameter, f.column, f.operator, f.negated, f.values, literals)


async def _literals(conn: asyncpg.Connection, served: Table, filters: Sequence[Filter]) -> list[tuple[str, ...]]:
    sql, arguments = check_sql(served, filters)
    prepared = await conn.prepare(sql, name="")
    row = list(await prepared.fetchrow(*arguments))
    found = []
    for f in filters:
        count = len(f.values)
        found.append(tuple(row[:count]))
        del row[: count + 1]  # its literals, then its operator's check
    return found
