"""The asyncpg pool: how it connects, how it is closed, and what "the database is unavailable" means."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from .lanes import Lanes

log = logging.getLogger(__name__)

POOL_CLOSE_SECONDS = 10.0

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


async def create_pool(url: str, min_size: int, max_size: int, statement_timeout: float | None = None) -> asyncpg.Pool:
    # Output must not depend on the server's time zone: every format writes UTC.
    server_settings = {"application_name": "streaming_api", "TimeZone": "UTC"}
    if statement_timeout is not None:
        # Enforced by PostgreSQL itself, so a stuck query ends even if the client side is blocked.
        server_settings["statement_timeout"] = str(max(1, round(statement_timeout * 1000)))
    return await asyncpg.create_pool(
        url, min_size=min_size, max_size=max_size, server_settings=server_settings, reset=_keep_session
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """On release, skip asyncpg's default RESET ALL / UNLISTEN / CLOSE ALL round trip (one per page).

    Nothing here leaves such state behind: no LISTEN, cursors or advisory locks, and the only settings
    a page sets are its id range, which the next page overwrites. (asyncpg still ends any open
    transaction itself.)"""


async def close_pool(pool: asyncpg.Pool) -> None:
    """Close gracefully, but never hang shutdown on a connection that is not given back."""
    try:
        async with asyncio.timeout(POOL_CLOSE_SECONDS):
            await pool.close()
    except TimeoutError:
        log.warning("pool not closed within %g s: terminating its connections", POOL_CLOSE_SECONDS)
        pool.terminate()


async def ping(lanes: Lanes, within_seconds: float = 2.0) -> None:
    # First in line for a connection: a health check must not queue behind running exports.
    async with asyncio.timeout(within_seconds), lanes.connection(Lanes.FIRST) as conn:
        await conn.fetchval("SELECT 1")
