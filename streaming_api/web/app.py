"""create_app(settings): the app factory. Middlewares, routes, and the database's lifetime (a cleanup context)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from aiohttp import web

from ..db.database import Database
from ..db.lanes import Lanes
from ..db.served import Catalog
from ..db.sources import PoolSize, sources_for
from ..export.formats import BY_EXTENSION
from ..names import parse_patterns
from ..settings import Settings
from ..tokens import load_keys
from . import browser, discovery, handlers, linking, logfilters
from .guards import StandardSlots
from .keys import (
    CATALOG,
    DATABASE,
    DATABASE_STATE,
    DEFAULT_GRANT,
    KEYS,
    LANES,
    OBSERVER,
    POOL,
    SETTINGS,
    SOURCES,
    STANDARD_SLOTS,
    DatabaseState,
)
from .metrics import Metrics
from .middleware import cors, security, shutdown
from .middleware.auth import jwt_middleware, requires_token
from .middleware.errors import error_middleware
from .middleware.timing import timing_middleware

# Room for a 16 KB header line (an oversized token gets the JWT check's 401); longer lines get the parser's 400.
MAX_HEADER_FIELD_BYTES = 32 * 1024

SeedProgress = Callable[[int, int], None]


def database_context(seed_progress: SeedProgress | None = None) -> Callable[[web.Application], AsyncIterator[None]]:
    async def database(app: web.Application) -> AsyncIterator[None]:
        """The database to use (started if embedded, its demo table seeded on first start), the pool, and
        the served tables as the catalog says, for the app's lifetime."""
        settings = app[SETTINGS]
        db = Database(settings)
        await db.start()
        try:
            await db.ensure_demo(settings.rows, seed_progress)
            app[DATABASE] = db.description
            assert db.url is not None
            size = PoolSize(
                settings.pool_min_size,
                settings.pool_max_size,
                settings.statement_timeout,
                settings.request_deadline,
                settings.max_snapshots,
                settings.snapshot_grace,
                settings.snapshots,
            )
            sources = sources_for(db.url, settings.replica_urls, size)
            await sources.connect(sources.primary)
            assert sources.primary.lanes is not None
            catalog = Catalog(settings.table_patterns)
            try:
                lanes = sources.primary.lanes
                async with lanes.connection(Lanes.FIRST) as conn:
                    await catalog.load(conn)
                catalog.start(lanes, settings.catalog_refresh)
                app[POOL] = lanes.pool
                app[LANES] = lanes
                app[SOURCES] = sources
                app[CATALOG] = catalog
                await sources.start_replicas()
                yield
            finally:
                await catalog.stop()
                await sources.close()  # the replicas' pools, then the primary's
        finally:
            app[DATABASE_STATE].stopped = await db.stop()

    return database


def _add_metrics(app: web.Application, require_token: bool) -> None:
    metrics = Metrics()
    app[OBSERVER] = metrics

    async def metrics_view(request: web.Request) -> web.Response:
        return await metrics.view(request)

    app.router.add_get("/metrics", requires_token(metrics_view) if require_token else metrics_view, name="metrics")


def create_app(settings: Settings, seed_progress: SeedProgress | None = None) -> web.Application:
    app = web.Application(
        middlewares=[shutdown.in_flight_middleware, timing_middleware, error_middleware, jwt_middleware],
        handler_args={"max_field_size": MAX_HEADER_FIELD_BYTES},
    )
    # However the app is run (run_app, AppRunner, a test server), aiohttp's own request logs keep no credential.
    logfilters.redact_credentials()
    app[SETTINGS] = settings
    app[DATABASE_STATE] = DatabaseState()
    app[KEYS] = load_keys(settings)
    app[DEFAULT_GRANT] = parse_patterns(settings.default_grant)
    app[STANDARD_SLOTS] = StandardSlots(settings.standard_max_concurrency)
    shutdown.install(app)
    cors.install(app)
    security.install(app)
    app.cleanup_ctx.append(database_context(seed_progress))
    # The default table (/chunked), a format named by the path's suffix (/chunked.csv, for tools that take
    # a URL and nothing else), and any served table (/chunked/sales.orders, /chunked/orders.csv).
    extensions = "|".join(BY_EXTENSION)
    for endpoint, handler in (("standard", handlers.standard), ("chunked", handlers.chunked)):
        app.router.add_get(f"/{endpoint}", handler, name=endpoint)
        app.router.add_get(f"/{endpoint}.{{extension:{extensions}}}", handler, name=f"{endpoint}.suffix")
        app.router.add_get(f"/{endpoint}/{{table:.+}}", handler, name=f"{endpoint}.table")
    app.router.add_get("/tables", discovery.tables, name="tables")
    app.router.add_get("/openapi.json", discovery.openapi, name="openapi")
    app.router.add_post("/links", linking.make_link, name="links")
    app.router.add_get("/healthz", handlers.healthz, name="healthz")
    browser.add_routes(app)
    if settings.metrics_enabled:
        _add_metrics(app, settings.metrics_require_token)
    return app
