"""A database for grants and roles: the service logs in as a role of its own (not a superuser), which may
assume ANALYST; row-level security on points lets the login see every row and ANALYST the even ids only
(half of them). ANALYST may not read `notes`; OUTSIDER is a role the login is no member of; ODD_ROLE is
named with a quote, a space and a non-ASCII letter."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import asyncpg

from streaming_api.db.schema import seed
from tests.support.bodies import ids

DATABASE = "streaming_api_grants"
LOGIN = "grants_login"
ANALYST = "grants_analyst"
OUTSIDER = "grants_outsider"
ODD_ROLE = 'grants "odd" rôle'
ROLES = (ANALYST, OUTSIDER, ODD_ROLE, LOGIN)
ROWS = 1_000
# What ANALYST's policy shows (ODD_ROLE's shows the ids divisible by 4).
ANALYST_IDS = list(range(2, ROWS + 1, 2))
ODD_ROLE_IDS = list(range(4, ROWS + 1, 4))
# Served beside points: one visible through search_path, one in a schema of its own, one not served at all.
TABLES = ("points", "notes", "audit.events")
NOTES_ROWS = 30
EVENTS_ROWS = 20


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"JWT {token}"}


def quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def as_user(url: str, user: str, database: str | None = None) -> str:
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    path = f"/{database}" if database else parts.path
    return urlunsplit(parts._replace(netloc=f"{user}@{host}", path=path))


async def make(admin_url: str) -> str:
    """The database, its tables and roles, made afresh on the server at admin_url; the login's URL to it."""
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
        for role in ROLES:
            await conn.execute(f"DROP ROLE IF EXISTS {quoted(role)}")
        await conn.execute(f"CREATE ROLE {LOGIN} LOGIN NOINHERIT")
        for role in (ANALYST, OUTSIDER, ODD_ROLE):
            await conn.execute(f"CREATE ROLE {quoted(role)} NOLOGIN")
        await conn.execute(f"GRANT {ANALYST}, {quoted(ODD_ROLE)} TO {LOGIN}")
        await conn.execute(f"CREATE DATABASE {DATABASE}")
    finally:
        await conn.close()
    admin = as_user(admin_url, urlsplit(admin_url).username or "postgres", DATABASE)
    conn = await asyncpg.connect(admin)
    try:
        await seed(conn, ROWS)
        await conn.execute(
            f"""
            CREATE TABLE notes (id integer PRIMARY KEY, body text NOT NULL);
            INSERT INTO notes SELECT i, 'note ' || i FROM generate_series(1, {NOTES_ROWS}) AS i;
            CREATE TABLE secret (id integer PRIMARY KEY);
            CREATE SCHEMA audit;
            CREATE TABLE audit.events (id integer PRIMARY KEY, what text NOT NULL);
            INSERT INTO audit.events SELECT i, 'event ' || i FROM generate_series(1, {EVENTS_ROWS}) AS i;
            ANALYZE;
            GRANT USAGE ON SCHEMA audit TO {LOGIN};
            GRANT SELECT ON points, notes, secret, audit.events TO {LOGIN};
            GRANT SELECT ON points TO {ANALYST}, {quoted(ODD_ROLE)};
            ALTER TABLE points ENABLE ROW LEVEL SECURITY;
            CREATE POLICY login_sees_all ON points FOR SELECT TO {LOGIN} USING (true);
            CREATE POLICY analyst_sees_even ON points FOR SELECT TO {ANALYST} USING (id % 2 = 0);
            CREATE POLICY odd_sees_fourths ON points FOR SELECT TO {quoted(ODD_ROLE)} USING (id % 4 = 0);
            """
        )
    finally:
        await conn.close()
    return as_user(admin_url, LOGIN, DATABASE)


# Every format the service writes, Arrow among them.
ALL_FORMATS = ("ndjson", "json", "csv", "text", "arrow")


def ids_of(fmt: str, body: bytes) -> list[int]:
    """The points ids a body holds, in order, in any format."""
    if fmt == "arrow":
        import pyarrow as pa
        import pyarrow.ipc

        return pa.ipc.open_stream(body).read_all().column("id").to_pylist()
    return ids(fmt, body)
