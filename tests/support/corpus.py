"""The corpus: a table of every type the type contract names (docs/types.md), with NULLs, NaN and the
infinities, every escape, a composite key, a mixed-case schema and table name, and columns named `a$1`,
with a space and a quote, and in non-ASCII; beside it a table without a key, a view and a partitioned
table. Made in a database of its own, whose settings are as odd as PostgreSQL allows (the output must
not depend on them), and in a plain one, to compare the two."""

from __future__ import annotations

import asyncpg

SCHEMA = "Corpus Schema"
TABLE = "Every Type"
# How a URL names it (the schema is not on the search path; no dot or quote to quote).
URL_NAME = f"{SCHEMA}.{TABLE}"
TABLES = (f'"{SCHEMA}"."{TABLE}"', f'"{SCHEMA}".no_key', f'"{SCHEMA}".a_view', f'"{SCHEMA}".parted')

# Every output setting off its default: a service that relied on the database's defaults would differ.
ODD_SETTINGS = {
    "TimeZone": "America/New_York",
    "DateStyle": "SQL, DMY",
    "IntervalStyle": "postgres_verbose",
    "bytea_output": "escape",
    "extra_float_digits": "-3",
}

# Every escape a format has: quotes, backslash, tab, newline, CR, comma, COPY's end marker, control
# and non-ASCII characters.
TRICKY = 'say "hi", \\ back\tslash\nnew\rline \\. ✓ 🦆 \x01 end'

# The column named with a space and a quote, as SQL names it.
QUOTED = '"with space and ""quote"""'

CREATE = f"""
DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE;
CREATE SCHEMA "{SCHEMA}";
CREATE TYPE "{SCHEMA}".mood AS ENUM ('sad', 'ok', 'happy', 'it''s');
CREATE DOMAIN "{SCHEMA}".positive AS integer CHECK (VALUE > 0);
CREATE TABLE "{SCHEMA}"."{TABLE}" (
    tenant text NOT NULL,
    seq integer NOT NULL,
    small int2, whole int4, big int8,
    exact numeric, fixed_point numeric(12, 3),
    single float4, double float8,
    flag bool,
    words text, short varchar(80), padded char(4),
    uid uuid,
    doc json, docb jsonb,
    raw bytea,
    day date, clock time, moment timestamp, instant timestamptz, span interval,
    ints int[], texts text[], doubles float8[],
    mood "{SCHEMA}".mood,
    positive "{SCHEMA}".positive,
    "a$1" text,
    {QUOTED} text,
    "Zürich ✓" int,
    span_of int4range,
    PRIMARY KEY (tenant, seq)
);
CREATE TABLE "{SCHEMA}".no_key (n int, label text);
INSERT INTO "{SCHEMA}".no_key SELECT g, 'row ' || g FROM generate_series(1, 250) g;
CREATE VIEW "{SCHEMA}".a_view AS SELECT tenant, seq, words FROM "{SCHEMA}"."{TABLE}";
CREATE TABLE "{SCHEMA}".parted (id bigint NOT NULL, region text NOT NULL, PRIMARY KEY (id, region))
    PARTITION BY LIST (region);
CREATE TABLE "{SCHEMA}".parted_north PARTITION OF "{SCHEMA}".parted FOR VALUES IN ('north');
CREATE TABLE "{SCHEMA}".parted_south PARTITION OF "{SCHEMA}".parted FOR VALUES IN ('south');
INSERT INTO "{SCHEMA}".parted SELECT g, CASE WHEN g % 2 = 0 THEN 'north' ELSE 'south' END
    FROM generate_series(1, 300) g;
"""

_INSERT = f"""
INSERT INTO "{SCHEMA}"."{TABLE}" (tenant, seq, small, whole, big, exact, fixed_point, single, double, flag,
    words, short, padded, uid, doc, docb, raw, day, clock, moment, instant, span, ints, texts, doubles,
    mood, positive, "a$1", {QUOTED}, "Zürich ✓", span_of)
VALUES
    ('acme', 1, 7, 42, 9000000000, 3.25, 12.5, 1.5, 0.1, true,
     'plain', 'varchar', 'abcd', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{{"a": 1}}', '{{"b": [1, 2]}}',
     '\\x0102ff', '2026-01-31', '12:34:56.789', '2026-01-31 12:34:56.123456', '2026-01-31 12:34:56+02',
     '1 year 2 mons 3 days 04:05:06.5', '{{1,2,3}}', '{{a,b}}', '{{1.5,2}}', 'happy', 5, 'dollar', 'spaced', 1,
     '[1,5)'),
    ('acme', 2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
     NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    ('acme', 3, -32768, 2147483647, -9223372036854775808, 'NaN', -1.5, 'NaN', 'Infinity', false,
     '', '', 'ab', '00000000-0000-0000-0000-000000000000', '[]', 'null', '\\x', '1999-12-31', '00:00:00',
     '1970-01-01 00:00:00', '1970-01-01 00:00:00+00', '-1 mons +2 days -00:00:00.000003', '{{}}', '{{}}',
     '{{NaN,Infinity,-Infinity}}', 'it''s', 1, '', '', -1, 'empty'),
    ('acme', 4, 0, 0, 0, 'Infinity', 0, '-Infinity', '-0', true,
     $tricky$, $tricky$, 'x', 'ffffffff-ffff-ffff-ffff-ffffffffffff',
     E'{{\\n  "line": "a\\\\nb", "u": "\\\\u00fc\\\\u2713",\\r\\n  "n": [1.0, 2.50]\\n}}',
     '{{"nested": {{"deep": [null, true, "✓"]}}}}', '\\x00ff0a0d22', '2026-12-07', '23:59:59.999999',
     '2026-12-07 23:59:59.999999', '2026-12-07 23:59:59.999999-11', '-3 years', '{{NULL,1,NULL}}',
     '{{NULL,"a,b","say \\"x\\"",""}}', '{{NULL,0.25,1e300}}', 'sad', 2147483647, $tricky$, $tricky$, 0, '(,)'),
    ('bravo', 1, 1, 1, 1, 123456789012345678901234567890.123456789, 999999999.999, 3.4e38, 1e-300, false,
     'b', 'b', 'b', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12', '"a string"', '12.5', '\\x61', '0001-01-01',
     '00:00:00.000001', '0001-01-01 00:00:00', '2000-02-29 00:00:00+00', '0', '{{-1}}', '{{"✓"}}', '{{0}}',
     'ok', 3, 'a', 'b', 2, '[-10,10]'),
    ('bravo', 2, 2, 2, 2, 2, 2, 2, 2, true, 'inf', 'inf', 'inf', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a13', '2',
     '{{}}', '\\x62', 'infinity', '23:00:00', 'infinity', '-infinity', '1 day', '{{2}}', '{{b}}', '{{2}}',
     'ok', 4, 'b', 'c', 3, '[2,3)'),
    ('Émile', 1, 3, 3, 3, 3, 3, 3, 1e15, false, 'é', 'é', 'é', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a14', '{{}}',
     '[1, "2", 3.5]', '\\xc3a9', '2026-02-28', '01:02:03', '2026-02-28 01:02:03', '2026-02-28 01:02:03+05:30',
     '1 mon', '{{3,4}}', '{{é}}', '{{5,6}}', 'sad', 6, 'é', 'é', 4, NULL)
""".replace("$tricky$", "'" + TRICKY.replace("'", "''") + "'")

ROWS = 7


async def create(conn: asyncpg.Connection) -> None:
    await conn.execute(CREATE)
    await conn.execute(_INSERT)
    await conn.execute(f'ANALYZE "{SCHEMA}"."{TABLE}", "{SCHEMA}".no_key, "{SCHEMA}".parted')


async def database(admin_url: str, name: str, odd: bool) -> str:
    """A database of its own holding the corpus (made once per session): its URL."""
    from tests.support.pg import _with_database

    conn = await asyncpg.connect(admin_url)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await conn.execute(f'CREATE DATABASE "{name}"')
        if odd:
            for setting, value in ODD_SETTINGS.items():
                await conn.execute(f"ALTER DATABASE \"{name}\" SET {setting} = '{value}'")
    finally:
        await conn.close()
    url = _with_database(admin_url, name)
    conn = await asyncpg.connect(url)
    try:
        await create(conn)
    finally:
        await conn.close()
    return url


async def database_values(url: str) -> list[dict]:
    """The corpus's rows as the database gives them, typed by asyncpg (intervals as (months, days,
    microseconds)), in key order; each date and time also as its text, for the infinities."""
    conn = await asyncpg.connect(url, server_settings={"TimeZone": "UTC", "DateStyle": "ISO"})
    try:
        await conn.set_type_codec("interval", schema="pg_catalog", encoder=str, decoder=lambda v: v, format="tuple")
        await conn.set_type_codec("json", schema="pg_catalog", encoder=str, decoder=str, format="text")
        await conn.set_type_codec("jsonb", schema="pg_catalog", encoder=str, decoder=str, format="text")
        records = await conn.fetch(
            f'SELECT t.*, day::text AS "day text", moment::text AS "moment text", instant::text AS "instant text",'
            f' span_of::text AS "span_of text" FROM "{SCHEMA}"."{TABLE}" t ORDER BY tenant, seq'
        )
    finally:
        await conn.close()
    return [dict(record) for record in records]
