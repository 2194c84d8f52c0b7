"""create_app(settings): wiring only — middlewares, routes, and the database's lifetime."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import asyncpg
from aiohttp import web

from . import cors, handlers, shutdown
from .auth import KEYS, jwt_middleware, load_keys
from .config import SETTINGS, Settings
from .db import LANES, POOL, Lanes, create_pool, row_count, seed
from .embedded import EmbeddedPostgres
from .errors import error_middleware
from .export import QUERIES, PageQueries
from .instrumentation import timing_middleware
from .limits import STANDARD_SLOTS, StandardSlots
from .metrics import setup_metrics
from .page import add_page_routes

log = logging.getLogger(__name__)

ROWS = web.AppKey("rows", int)
DATABASE = web.AppKey("database", str)
# Room for a 16 KB header line (an oversized token gets the JWT check's 401); longer lines get the parser's 400.
MAX_HEADER_FIELD_BYTES = 32 * 1024
POOL_CLOSE_SECONDS = 10.0


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


def database_context(
    seed_progress: Callable[[int, int], None] | None = None,
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def database(app: web.Application) -> AsyncIterator[None]:
        """Start the embedded PostgreSQL when no database_url is set, open the pool, seed an empty table."""
        settings = app[SETTINGS]
        embedded = None
        url = settings.database_url
        if url is None:
            embedded = EmbeddedPostgres(settings.data_path)
            url = await asyncio.to_thread(embedded.start)
            app[DATABASE] = f"embedded PostgreSQL in {embedded.pgdata}"
        else:
            app[DATABASE] = "DATABASE_URL"
        try:
            pool = await create_pool(url, settings.pool_min_size, settings.pool_max_size, settings.statement_timeout)
            try:
                async with pool.acquire() as conn:
                    rows = await row_count(conn)
                    if rows == 0 and settings.rows > 0:
                        log.info("table points is missing or empty: seeding %s rows", f"{settings.rows:,}")
                        started = time.perf_counter()
                        await seed(conn, settings.rows, _bind(seed_progress, settings.rows))
                        rows = settings.rows
                        log.info("seeded %s rows in %.1f s", f"{rows:,}", time.perf_counter() - started)
                app[POOL] = pool
                app[LANES] = Lanes(pool, settings.pool_max_size)
                app[ROWS] = rows
                yield
            finally:
                await _close_pool(pool)
        finally:
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)

    return database


async def _close_pool(pool: asyncpg.Pool) -> None:
    """Close gracefully, but never hang shutdown on a connection that is not given back."""
    try:
        async with asyncio.timeout(POOL_CLOSE_SECONDS):
            await pool.close()
    except TimeoutError:
        log.warning("pool not closed within %g s: terminating its connections", POOL_CLOSE_SECONDS)
        pool.terminate()


def _bind(progress: Callable[[int, int], None] | None, total: int) -> Callable[[int], None] | None:
    return None if progress is None else (lambda done: progress(done, total))


def create_app(settings: Settings, seed_progress: Callable[[int, int], None] | None = None) -> web.Application:
    app = web.Application(
        middlewares=[shutdown.in_flight_middleware, timing_middleware, error_middleware, jwt_middleware],
        handler_args={"max_field_size": MAX_HEADER_FIELD_BYTES},
    )
    app[SETTINGS] = settings
    app[STANDARD_SLOTS] = StandardSlots(settings.standard_max_concurrency)
    shutdown.install(app)
    cors.install(app)
    app[KEYS] = load_keys(settings)
    app[QUERIES] = PageQueries()
    app.cleanup_ctx.append(database_context(seed_progress))
    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/standard", handlers.standard, name="standard")
    app.router.add_get("/chunked", handlers.chunked, name="chunked")
    app.router.add_get("/healthz", handlers.healthz, name="healthz")
    add_page_routes(app)
    if settings.metrics_enabled:
        setup_metrics(app, settings.metrics_require_token)
    return app
