"""A database for the filter tests: a table whose columns are named as users name them (a `$1`, quotes, a
space, non-ASCII, a parameter's name) and typed as they type them, whose notes hold SQL injection attempts
and every LIKE metacharacter; a view of it (no key); a canary table; and an audit that records any write or
DDL. Plus an oracle: the rows a filter means, found by PostgreSQL with the values as bound parameters."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from urllib.parse import urlencode

import asyncpg

TABLE = "things"
VIEW = "things_view"
TABLES = (TABLE, VIEW)
ROWS = 300

# Attempts a value, a name, an operator or a key might carry (also stored as notes: eq must find them).
INJECTIONS = (
    "1; DROP TABLE canary",
    "1 OR 1=1",
    "' OR '1'='1",
    "'; DELETE FROM canary; --",
    "0) UNION SELECT secret FROM canary --",
    "$1",
    "$$ || (SELECT secret FROM canary) || $$",
    "E'\\x27 OR 1=1",
    "\\'; TRUNCATE canary; --",
    "1::text",
    "*/ SELECT 1 /*",
    '"; DROP TABLE things; --',
    'x") OR ("1"="1',
    "%_\\*",
    "a,b),(c",
    "Zürich ✓ 🦆",
    "",
)

# Columns as SQL names them, and their types: a `$1`, quotes, a space and a typmod, non-ASCII, a parameter's
# name, NULLs, an enum, a domain, an array, json (no equality: a 400).
COLUMNS = {
    "id": "bigint PRIMARY KEY",
    '"$1"': "integer NOT NULL",
    '"it\'s ""quoted"""': "text",
    '"with space"': "numeric(10,2)",
    '"ünïcode ✓"': "date",
    '"limit"': "integer",
    "flag": "boolean",
    "note": "text",
    "at": "timestamptz NOT NULL",
    "score": "double precision",
    "mood": "mood",
    "amount": "positive",
    "tags": "text[]",
    "doc": "json",
}
# The same names as the catalog (and a filter's parameter) has them.
NAMES = ("id", "$1", 'it\'s "quoted"', "with space", "ünïcode ✓", "limit", "flag", "note", "at", "score", "mood")
NAMES += ("amount", "tags", "doc")

CREATE = f"""
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
CREATE TABLE {TABLE} ({", ".join(f"{name} {kind}" for name, kind in COLUMNS.items())});
"""
FILL = f"""
INSERT INTO {TABLE}
SELECT g,
       g % 17,
       CASE WHEN g % 9 = 0 THEN NULL ELSE 'q' || (g % 7) || CASE WHEN g % 2 = 0 THEN '''s' ELSE '' END END,
       CASE WHEN g % 11 = 0 THEN NULL ELSE round((g * 1.37)::numeric, 2) END,
       DATE '2026-01-01' + (g % 40),
       g % 5,
       CASE g % 3 WHEN 0 THEN true WHEN 1 THEN false END,
       CASE WHEN g % 13 = 0 THEN NULL ELSE ($1::text[])[1 + g % $2] END,
       TIMESTAMPTZ '2026-01-01 00:00:00+00' + g * INTERVAL '1 hour 1 second',
       CASE WHEN g % 10 = 0 THEN NULL ELSE g / 8.0 END,
       (ARRAY['sad', 'ok', 'happy'])[1 + g % 3]::mood,
       1 + g % 50,
       ARRAY['t' || (g % 4), 'u'],
       json_build_object('g', g)
FROM generate_series(1, {ROWS}) g
"""
# A view (no key), the canary, and the audit: every write to the tables and every DDL, recorded.
GUARD = f"""
CREATE VIEW {VIEW} AS SELECT * FROM {TABLE};
CREATE TABLE canary (id int PRIMARY KEY, secret text NOT NULL);
INSERT INTO canary VALUES (1, 'the canary'), (2, 'is alive');
CREATE TABLE audit (at timestamptz DEFAULT clock_timestamp(), what text NOT NULL);
CREATE FUNCTION audit_rows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit (what) VALUES (TG_OP || ' ' || TG_TABLE_NAME); RETURN NULL; END $$;
CREATE TRIGGER audit_things AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {TABLE}
    FOR EACH STATEMENT EXECUTE FUNCTION audit_rows();
CREATE TRIGGER audit_canary AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON canary
    FOR EACH STATEMENT EXECUTE FUNCTION audit_rows();
CREATE FUNCTION audit_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO audit (what) VALUES (tg_tag); END $$;
ANALYZE {TABLE};
CREATE EVENT TRIGGER audit_ddl ON ddl_command_end EXECUTE FUNCTION audit_ddl();
CREATE EVENT TRIGGER audit_drop ON sql_drop EXECUTE FUNCTION audit_ddl();
"""
# The notes: the injection attempts, LIKE's metacharacters and a star, a backslash.
NOTES = (*INJECTIONS, "100% sure", "under_score", "star*light", "back\\slash", "plain note")


async def make(url: str) -> None:
    """The filter tests' tables in the (empty) database at url."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(CREATE)
        await conn.execute(FILL, list(NOTES), len(NOTES))
        await conn.execute(GUARD)
    finally:
        await conn.close()


async def fingerprint(url: str) -> tuple:
    """What an injection could change: the canary's rows, the audit (any write or DDL since), the tables'
    rows, and the relations, functions and roles there are."""
    conn = await asyncpg.connect(url)
    try:
        return (
            await conn.fetch("SELECT * FROM canary ORDER BY id"),
            await conn.fetch("SELECT what FROM audit"),
            await conn.fetchval(f"SELECT md5(string_agg(t::text, ',' ORDER BY id)) FROM {TABLE} t"),
            await conn.fetchval("SELECT md5(string_agg(oid::text || relname, ',' ORDER BY oid)) FROM pg_class"),
            await conn.fetchval("SELECT md5(string_agg(oid::text || proname, ',' ORDER BY oid)) FROM pg_proc"),
            await conn.fetchval("SELECT md5(string_agg(rolname, ',' ORDER BY rolname)) FROM pg_roles"),
        )
    finally:
        await conn.close()


def ids_of(fmt: str, body: bytes) -> list[int]:
    """The id of every row of a body, in order, read with the standard library (pyarrow for Arrow)."""
    if fmt == "ndjson":
        return [json.loads(line)["id"] for line in body.split(b"\n")[:-1]]
    if fmt == "json":
        return [row["id"] for row in json.loads(body)]
    if fmt == "arrow":
        import pyarrow as pa

        return pa.ipc.open_stream(body).read_all().column("id").to_pylist()
    reader = csv.reader(io.StringIO(body.decode("utf-8"), newline=""))
    header = next(reader)
    return [int(record[header.index("id")]) for record in reader]


@dataclass(frozen=True)
class Wanted:
    """A filter as the tests mean it: a column, an operator, its values as PostgreSQL's text (a like pattern
    as PostgreSQL's LIKE takes it), negated or not."""

    column: str
    operator: str
    values: tuple[str, ...] = ()
    negated: bool = False

    def parameter(self) -> str:
        """How a query names the column: in double quotes where it is named like a parameter."""
        return f'"{self.column}"' if self.column in ("limit",) else self.column

    def text(self) -> str:
        """The filter as a query writes it (PostgREST's syntax; a like pattern's % written as *)."""
        head = "not." if self.negated else ""
        if self.operator == "in":
            return f"{head}in.({','.join(_in_item(value) for value in self.values)})"
        if self.operator == "is":
            return f"{head}is.{self.values[0]}"
        value = self.values[0]
        if self.operator in ("like", "ilike"):
            value = _starred(value)
        return f"{head}{self.operator}.{value}"


def query(wanted: list[Wanted], **others: str) -> str:
    """The query string of these filters (and other parameters)."""
    return urlencode([(w.parameter(), w.text()) for w in wanted] + list(others.items()))


def _starred(pattern: str) -> str:
    """A LIKE pattern with each unescaped % written as PostgREST's *."""
    return replace_unescaped(pattern, "%", "*")


def replace_unescaped(pattern: str, char: str, by: str) -> str:
    """`pattern` with each `char` not escaped by a backslash written as `by` (escaped pairs kept as they are)."""
    out, index = [], 0
    while index < len(pattern):
        if pattern[index] == "\\":
            out.append(pattern[index : index + 2])
            index += 2
            continue
        out.append(by if pattern[index] == char else pattern[index])
        index += 1
    return "".join(out)


def _in_item(value: str) -> str:
    if value == "" or any(char in value for char in ',()"\\'):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


_SQL_OPERATORS = {"eq": "=", "neq": "<>", "gt": ">", "gte": ">=", "lt": "<", "lte": "<=", "like": "LIKE"}
_SQL_OPERATORS["ilike"] = "ILIKE"


class Unreadable(Exception):
    """A filter the oracle finds wrong: a value its column's type does not read, an operator it lacks."""


async def oracle(conn: asyncpg.Connection, wanted: list[Wanted], relation: str = TABLE) -> list[int]:
    """The ids the filters keep, in id order, by PostgreSQL with every value a bound parameter read as the
    column's type; Unreadable where PostgreSQL cannot read one (each is read on its own first: in the query
    it might never be, after a condition that is false), or has no such operator."""
    types = {
        record["attname"]: record["type"]
        for record in await conn.fetch(
            "SELECT attname, format_type(coalesce(nullif(t.typbasetype, 0), a.atttypid), NULL) AS type "
            "FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE attrelid = $1::regclass AND attnum > 0",
            TABLE,
        )
    }
    conditions, arguments = [], []
    for w in wanted:
        column = '"' + w.column.replace('"', '""') + '"'

        def argument(value: str, as_text: bool = False) -> str:
            arguments.append(value)
            return f"${len(arguments)}::text" + ("" if as_text else f"::{types[w.column]}")  # noqa: B023

        if w.operator == "in":
            condition = f"{column} IN ({', '.join(argument(v) for v in w.values)})" if w.values else "false"
        elif w.operator == "is":
            keyword = {"not_null": "NOT NULL", "null": "NULL", "unknown": "UNKNOWN"}.get(w.values[0], w.values[0])
            condition = f"{column} IS {keyword.upper()}"
        else:
            as_text = w.operator in ("like", "ilike")
            condition = f"{column} {_SQL_OPERATORS[w.operator]} {argument(w.values[0], as_text)}"
        conditions.append(f"NOT ({condition})" if w.negated else f"({condition})")
    where = " AND ".join(conditions) or "true"
    try:
        for w in wanted:
            for value in w.values if w.operator not in ("is", "like", "ilike") else ():
                await conn.fetchval(f"SELECT CAST($1::text AS {types[w.column]})", value)
            if w.operator in ("like", "ilike") and (len(w.values[0]) - len(w.values[0].rstrip("\\"))) % 2:
                raise Unreadable("a LIKE pattern that ends with its escape character")
        records = await conn.fetch(f"SELECT id FROM {relation} WHERE {where} ORDER BY id", *arguments)
    except asyncpg.PostgresError as exc:
        raise Unreadable(str(exc)) from exc
    return [record["id"] for record in records]
