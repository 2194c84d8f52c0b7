"""The served tables, read from PostgreSQL's catalog: which relations the `tables` setting names, their
columns and types, the key an export pages by, and what their rows weigh.

Nothing here writes. Reflection runs at start-up and again every `catalog_refresh` seconds (web.app), so
an added column or a new table matching a pattern is served without a restart.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from ..names import Pattern, url_name

log = logging.getLogger(__name__)

# Relation kinds served, as pg_class.relkind says them.
KINDS = {"r": "table", "p": "partitioned table", "v": "view", "m": "materialized view", "f": "foreign table"}
# Types whose text form reads back as the same value and that order with a btree: what a key may hold.
KEY_TYPES = frozenset(
    (
        *("int2", "int4", "int8", "numeric", "float4", "float8", "bool", "oid"),
        *("text", "varchar", "bpchar", "name", "bytea", "uuid", "inet", "cidr", "macaddr", "macaddr8"),
        *("date", "time", "timetz", "timestamp", "timestamptz", "interval"),
    )
)
INTEGER_TYPES = frozenset(("int2", "int4", "int8"))


@dataclass(frozen=True)
class PgType:
    """A column's type, a domain resolved to the type under it."""

    oid: int
    schema: str
    name: str
    # typtype: b base, e enum, c composite, r range, m multirange, p pseudo.
    kind: str
    category: str
    element: PgType | None = None

    @property
    def builtin(self) -> str | None:
        """The name of a pg_catalog type (int8, text, _int4...), None for one of the database's own."""
        return self.name if self.schema == "pg_catalog" else None


@dataclass(frozen=True)
class Column:
    name: str
    type: PgType
    # atttypmod (or the domain's): numeric's precision and scale, varchar's length.
    typmod: int
    nullable: bool
    # The declared type as PostgreSQL names it (format_type): numeric(10,2), a domain's own name.
    declared: str

    @property
    def numeric_precision(self) -> tuple[int, int] | None:
        """(precision, scale) of numeric(p, s); None for a numeric without them."""
        if self.type.builtin != "numeric" or self.typmod < 4:
            return None
        packed = self.typmod - 4
        scale = packed & 0x7FF
        if scale & 0x400:  # PostgreSQL 15+ keeps a negative scale in 11 bits
            scale -= 0x800
        return (packed >> 16) & 0xFFFF, scale


@dataclass(frozen=True)
class Table:
    oid: int
    schema: str
    name: str
    kind: str
    # Whether search_path makes it visible without its schema (then a URL may name it unqualified).
    visible: bool
    columns: tuple[Column, ...]
    # The columns an export is ordered and paged by (a primary key, or a unique index on NOT NULL
    # columns); empty when there is none (a view, a table without such a key).
    key: tuple[str, ...]
    estimated_rows: int | None = None
    # Raw bytes per row (text as stored before compression), from a sample; None before it is measured.
    row_bytes: float | None = None
    # The smallest and largest value of a key of one integer column (None: another key, or no rows).
    key_range: tuple[int, int] | None = None
    # Whether the database's encoding is UTF-8 (then text goes out as its own bytes).
    utf8: bool = True
    _by_name: dict[str, Column] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_name.update({column.name: column for column in self.columns})

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(column.name for column in self.columns)

    def column(self, name: str) -> Column | None:
        return self._by_name.get(name)

    @property
    def integer_key(self) -> bool:
        """One integer column: pages may then be id ranges, found by arithmetic (no plan before the first)."""
        return len(self.key) == 1 and self._by_name[self.key[0]].type.builtin in INTEGER_TYPES

    @property
    def qualified(self) -> str:
        """schema.name for people (log lines, errors): quoted only where a name needs it."""
        return url_name(self.schema, self.name, qualified=True)

    @property
    def url_name(self) -> str:
        return url_name(self.schema, self.name, qualified=not self.visible)

    @property
    def file_stem(self) -> str:
        """The download's file name without its extension: the table's name, made safe for a file system."""
        stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in self.name).strip(".")
        return stem or "export"

    def shape(self) -> tuple[Any, ...]:
        """What an export depends on: a change here means a new layout (columns, types, key)."""
        return (self.oid, self.columns, self.key)


@dataclass(frozen=True)
class Missing:
    """A pattern of the `tables` setting that names a table the database does not have (or hides)."""

    pattern: Pattern
    reason: str


@dataclass(frozen=True)
class Reflection:
    tables: tuple[Table, ...]
    missing: tuple[Missing, ...]


_RELATIONS = """
SELECT c.oid, n.nspname, c.relname, c.relkind::text AS relkind, pg_catalog.pg_table_is_visible(c.oid) AS visible,
       pg_catalog.has_table_privilege(c.oid, 'SELECT') AS readable
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind::text = ANY($1::text[]) AND n.nspname !~ '^pg_toast' AND n.nspname !~ '^pg_temp_'
"""

_COLUMNS = """
SELECT a.attrelid, a.attnum, a.attname, a.atttypid, a.atttypmod, a.attnotnull, a.attcollation,
       pg_catalog.format_type(a.atttypid, a.atttypmod) AS declared
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = ANY($1::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attrelid, a.attnum
"""

_TYPES = """
SELECT t.oid, n.nspname, t.typname, t.typtype::text AS typtype, t.typcategory::text AS typcategory,
       t.typelem, t.typbasetype, t.typtypmod
FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
WHERE t.oid = ANY($1::oid[])
"""

# Unique btree indexes usable as a key: no expression, no predicate, valid, immediate, every column in
# plain ascending order with the column's own collation (so ORDER BY the key walks the index).
_KEYS = """
SELECT i.indrelid, i.indisprimary, i.indexrelid, i.indkey::int2[] AS columns
FROM pg_catalog.pg_index i
JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
JOIN pg_catalog.pg_am am ON am.oid = ic.relam
WHERE i.indrelid = ANY($1::oid[]) AND i.indisunique AND i.indisvalid AND i.indimmediate
  AND i.indpred IS NULL AND i.indexprs IS NULL AND am.amname = 'btree'
  AND i.indnkeyatts = i.indnatts
  AND NOT EXISTS (SELECT 1 FROM unnest(i.indoption::int2[]) o WHERE o <> 0)
  AND NOT EXISTS (
      SELECT 1 FROM unnest(i.indkey::int2[], i.indcollation::oid[]) AS k(attnum, coll)
      JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
      WHERE k.coll <> a.attcollation)
ORDER BY i.indrelid, i.indisprimary DESC, array_length(i.indkey::int2[], 1), i.indexrelid
"""

# reltuples of a table, or the sum of its partitions' for a partitioned one; -1 when never analysed.
_ESTIMATES = """
SELECT c.oid,
       CASE WHEN c.relkind = 'p' THEN (
           SELECT sum(GREATEST(p.reltuples, 0))::float8 FROM pg_catalog.pg_partition_tree(c.oid) t
           JOIN pg_catalog.pg_class p ON p.oid = t.relid WHERE t.isleaf)
       ELSE c.reltuples::float8 END AS reltuples
FROM pg_catalog.pg_class c WHERE c.oid = ANY($1::oid[])
"""


async def _types(conn: asyncpg.Connection, oids: set[int]) -> dict[int, asyncpg.Record]:
    """pg_type rows for the oids and every type they lead to (a domain's base, an array's element)."""
    found: dict[int, asyncpg.Record] = {}
    wanted = set(oids)
    while wanted:
        for record in await conn.fetch(_TYPES, list(wanted)):
            found[record["oid"]] = record
        wanted = {
            oid
            for record in found.values()
            for oid in (record["typelem"], record["typbasetype"])
            if oid and oid not in found
        }
    return found


def _resolve(records: dict[int, asyncpg.Record], oid: int, typmod: int) -> tuple[PgType, int]:
    """The type under any domains (and the typmod that applies), with its element type for an array."""
    record = records[oid]
    while record["typtype"] == "d":
        if typmod < 0:
            typmod = record["typtypmod"]
        record = records[record["typbasetype"]]
    element = None
    if record["typcategory"] == "A" and record["typelem"]:
        element, _ = _resolve(records, record["typelem"], -1)
    pg_type = PgType(
        record["oid"], record["nspname"], record["typname"], record["typtype"], record["typcategory"], element
    )
    return pg_type, typmod


def _keyable(column: Column) -> bool:
    return not column.nullable and (column.type.builtin in KEY_TYPES or column.type.kind == "e")


def _key(
    columns: tuple[Column, ...], by_attnum: dict[int, Column], candidates: list[asyncpg.Record]
) -> tuple[str, ...]:
    """The first usable candidate: a primary key before unique indexes, fewer columns before more."""
    for candidate in candidates:
        chosen = [by_attnum.get(attnum) for attnum in candidate["columns"]]
        if any(column is None for column in chosen):
            continue
        if all(column is not None and _keyable(column) for column in chosen):
            return tuple(column.name for column in chosen if column is not None)
    return ()


async def reflect(conn: asyncpg.Connection, patterns: tuple[Pattern, ...]) -> Reflection:
    """The relations the patterns match, in the patterns' order (a table matched twice is served once)."""
    relations = await conn.fetch(_RELATIONS, list(KINDS))
    utf8 = await conn.fetchval(
        "SELECT pg_encoding_to_char(encoding) = 'UTF8' FROM pg_database WHERE datname = current_database()"
    )
    chosen: dict[int, asyncpg.Record] = {}
    missing: list[Missing] = []
    for pattern in patterns:
        matched = [
            record
            for record in relations
            if pattern.matches(record["nspname"], record["relname"], record["visible"])
            # A wildcard schema does not reach PostgreSQL's own schemas; naming one does.
            and (record["nspname"] not in ("pg_catalog", "information_schema") or pattern.schema is not None)
            and not (pattern.schema is not None and pattern.schema.wildcard and record["nspname"].startswith("pg_"))
        ]
        readable = [record for record in matched if record["readable"]]
        if not readable:
            reason = "no SELECT privilege for this login" if matched else "no such table or view"
            missing.append(Missing(pattern, reason))
        for record in sorted(readable, key=lambda r: (r["nspname"], r["relname"])):
            chosen.setdefault(record["oid"], record)
    if not chosen:
        return Reflection((), tuple(missing))
    oids = list(chosen)
    column_records = await conn.fetch(_COLUMNS, oids)
    types = await _types(conn, {record["atttypid"] for record in column_records})
    key_records = await conn.fetch(_KEYS, oids)
    estimates = {record["oid"]: record["reltuples"] for record in await conn.fetch(_ESTIMATES, oids)}
    tables = []
    for oid, relation in chosen.items():
        by_attnum: dict[int, Column] = {}
        for record in column_records:
            if record["attrelid"] != oid:
                continue
            pg_type, typmod = _resolve(types, record["atttypid"], record["atttypmod"])
            by_attnum[record["attnum"]] = Column(
                record["attname"], pg_type, typmod, not record["attnotnull"], record["declared"]
            )
        columns = tuple(by_attnum.values())
        if not columns:
            continue  # a relation without columns has nothing to export
        candidates = [record for record in key_records if record["indrelid"] == oid]
        estimate = estimates.get(oid)
        tables.append(
            Table(
                oid,
                relation["nspname"],
                relation["relname"],
                KINDS[relation["relkind"]],
                relation["visible"],
                columns,
                _key(columns, by_attnum, candidates),
                None if estimate is None or estimate < 0 else round(estimate),
                utf8=utf8,
            )
        )
    return Reflection(tuple(tables), tuple(missing))
