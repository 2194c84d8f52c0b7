"""A group's filter (--filter): the query it adds to the group's URL, and what the bench needs to judge it,
found with the service's own db.filters: the condition its floor's COPY runs (the same SQL a page runs),
and the rows it keeps, counted by PostgreSQL (what every body must hold)."""

from __future__ import annotations

import urllib.parse

import asyncpg

from ..db.catalog import Table
from ..db.filters import FilterError, Where, check, column_named, parse_filter
from .floor import count_rows

# Parameters the bench sets itself: a filter query may not carry them.
OWN_PARAMETERS = frozenset({"format", "limit", "page_size", "snapshot", "after", "after_id", "columns", "token"})


class BadFilter(ValueError):
    """--filter is not a query of filters (the message says why, in one line)."""


def pairs(query: str) -> list[tuple[str, str]]:
    """The query's name=value pairs, decoded (`value=gte.0&id=lt.1000`)."""
    try:
        found = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise BadFilter(f"--filter {query!r}: not a query string of name=[not.]operator.value pairs") from None
    own = [name for name, _ in found if name in OWN_PARAMETERS]
    if own:
        raise BadFilter(f"--filter {query!r}: {own[0]} is set by the bench, not by a filter")
    return found


def encoded(query: str) -> str:
    """The query as the URL carries it (every pair percent-encoded alike)."""
    return urllib.parse.urlencode(pairs(query))


async def where_of(conn: asyncpg.Connection, served: Table, query: str) -> Where:
    """The filters of the query over the table, their values read by PostgreSQL as the service reads them."""
    filters = []
    for name, raw in pairs(query):
        column = column_named(name, served)
        if column is None:
            raise BadFilter(f"--filter: {name!r} is not a column of {served.qualified}")
        try:
            filters.append(parse_filter(name, column, raw))
        except FilterError as exc:
            raise BadFilter(f"--filter: {exc}") from None
    try:
        return Where(served, await check(conn, served, tuple(filters)))
    except FilterError as exc:
        raise BadFilter(f"--filter: {exc}") from None


async def judged(
    conn: asyncpg.Connection | None, served: Table | None, query: str, limit: int | None
) -> tuple[str | None, int | None]:
    """For a group with this filter: the condition its floor runs, and the rows each body must hold (within
    the limit); (None, None) where the bench cannot reach the database (then the warm-up's count stands)."""
    if conn is None or served is None:
        return None, None
    where = await where_of(conn, served, query)
    rows = await count_rows(conn, served, where.sql)
    return where.sql, rows if limit is None else min(rows, limit)
