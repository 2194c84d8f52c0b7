"""The asyncpg pool: how it connects (straight to PostgreSQL or through a pooler such as PgBouncer), how it
is closed, and what "the database is unavailable" means.

Straight to PostgreSQL, statement_timeout is a startup parameter of every connection. A stock PgBouncer
refuses that parameter ("unsupported startup parameter"), and one configured to ignore it drops it
silently; either way the service then runs each unit of work in a transaction that sets it first
(`SET LOCAL`), which also keeps the unit on one server connection under transaction pooling. Named
prepared statements do not survive transaction pooling either, so behind a pooler the statement cache is
off: asyncpg then sends each query's Parse, Bind and Execute together.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import asyncpg

log = logging.getLogger(__name__)

POOL_CLOSE_SECONDS = 10.0
DEFAULT_STATEMENT_CACHE = 100  # asyncpg's own default
CONNECT_TIMEOUT_SECONDS = 10.0

# What "the database is unavailable" looks like from asyncpg: refused or lost connections,
# server-side errors, and pool or query time-outs.
# Not every PostgresError: a syntax error or a missing column is a bug (500), not an outage (503).
DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,  # includes QueryCanceledError (statement_timeout), admin shutdown
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)

# Output must not depend on the database's settings (the type contract, export.values): every format writes
# UTC, ISO dates, ISO 8601 intervals, doubles that read back exactly, bytea in hex, and SQL literals whose
# backslashes are plain. client_encoding as the server spells it, so a pooler that tracks it has nothing to
# SET before each transaction. A stock PgBouncer passes on only the first three as startup parameters.
BASE_SERVER_SETTINGS = {"application_name": "streaming_api", "TimeZone": "UTC", "client_encoding": "UTF8"}
OUTPUT_SETTINGS = {
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "iso_8601",
    "extra_float_digits": "1",
    "bytea_output": "hex",
    "standard_conforming_strings": "on",
}


@dataclass(frozen=True)
class Connected:
    pool: asyncpg.Pool
    # Behind a pooler (it refused or dropped statement_timeout) every unit of work runs in a transaction:
    # what each such transaction runs first. None straight to PostgreSQL.
    unit_begin: str | None


def _timeout_ms(statement_timeout: float) -> int:
    return max(1, round(statement_timeout * 1000))


async def _behind_pooler(url: str, timeout_ms: int) -> bool:
    """Whether connections to `url` lose the statement_timeout startup parameter (a pooler in between)."""
    try:
        conn = await asyncpg.connect(
            url,
            server_settings={**BASE_SERVER_SETTINGS, "statement_timeout": str(timeout_ms)},
            statement_cache_size=0,
            timeout=CONNECT_TIMEOUT_SECONDS,
        )
    except asyncpg.ProtocolViolationError as exc:
        if "unsupported startup parameter" in str(exc):
            return True
        raise
    try:
        applied = await conn.fetchval("SELECT setting FROM pg_settings WHERE name = 'statement_timeout'")
    finally:
        await conn.close()
    return applied != str(timeout_ms)


async def create_pool(url: str, min_size: int, max_size: int, statement_timeout: float) -> Connected:
    timeout_ms = _timeout_ms(statement_timeout)
    behind_pooler = await _behind_pooler(url, timeout_ms)
    server_settings = dict(BASE_SERVER_SETTINGS)
    unit_begin = None
    if behind_pooler:
        log.info(
            "a connection pooler (PgBouncer?) is in front of PostgreSQL: statement_timeout and the output "
            "settings are set in each transaction, and no statement relies on the session"
        )
        pinned = {"statement_timeout": str(timeout_ms), "TimeZone": "UTC", **OUTPUT_SETTINGS}
        unit_begin = "BEGIN; " + "; ".join(f"SET LOCAL {name} = '{value}'" for name, value in pinned.items())
    else:
        # Enforced by PostgreSQL itself, so a stuck query ends even if the client side is blocked.
        server_settings["statement_timeout"] = str(timeout_ms)
        server_settings.update(OUTPUT_SETTINGS)
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        server_settings=server_settings,
        # Straight to PostgreSQL, prepared statements save the plan query a round trip; behind a pooler,
        # another client's server connection would not have them.
        statement_cache_size=0 if behind_pooler else DEFAULT_STATEMENT_CACHE,
        timeout=CONNECT_TIMEOUT_SECONDS,
        reset=_keep_session,
    )
    return Connected(pool, unit_begin)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """On release, skip asyncpg's default RESET ALL / UNLISTEN / CLOSE ALL round trip (one per page).

    Nothing here leaves session state behind: no settings, LISTEN, cursors or advisory locks. (asyncpg
    still ends any open transaction itself.) Behind PgBouncer, RESET ALL would even lose the TimeZone
    the pooler tracks for this client."""


async def close_pool(pool: asyncpg.Pool) -> None:
    """Close gracefully, but never hang shutdown on a connection that is not given back."""
    try:
        async with asyncio.timeout(POOL_CLOSE_SECONDS):
            await pool.close()
    except TimeoutError:
        log.warning("pool not closed within %g s: terminating its connections", POOL_CLOSE_SECONDS)
        pool.terminate()
