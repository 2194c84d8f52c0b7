"""create_app(settings): wiring only — middlewares, routes, and the database's lifetime."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from . import handlers
from .auth import KEYS, jwt_middleware, load_keys
from .config import SETTINGS, Settings
from .db import POOL, create_pool, row_count, seed
from .embedded import EmbeddedPostgres
from .errors import error_middleware
from .export import QUERIES, PageQueries
from .instrumentation import timing_middleware

log = logging.getLogger(__name__)

ROWS = web.AppKey("rows", int)
DATABASE = web.AppKey("database", str)


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
            pool = await create_pool(url, settings.pool_min_size, settings.pool_max_size)
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
                app[ROWS] = rows
                yield
            finally:
                await pool.close()
        finally:
            if embedded is not None:
                await asyncio.to_thread(embedded.stop)

    return database


def _bind(progress: Callable[[int, int], None] | None, total: int) -> Callable[[int], None] | None:
    return None if progress is None else (lambda done: progress(done, total))


def create_app(settings: Settings, seed_progress: Callable[[int, int], None] | None = None) -> web.Application:
    app = web.Application(middlewares=[timing_middleware, error_middleware, jwt_middleware])
    app[SETTINGS] = settings
    app[KEYS] = load_keys(settings)
    app[QUERIES] = PageQueries()
    app.cleanup_ctx.append(database_context(seed_progress))
    app.on_response_prepare.append(_security_headers)
    app.router.add_get("/standard", handlers.standard, name="standard")
    app.router.add_get("/chunked", handlers.chunked, name="chunked")
    app.router.add_get("/healthz", handlers.healthz, name="healthz")
    return app
