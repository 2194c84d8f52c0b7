"""One server process: its logging, its event loop, its signals, and the app served on a socket until
it is told to stop. `run.py serve` runs one; `serve --workers N` runs N of them (cli.workers)."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from ..db.served import Catalog
from ..settings import Settings
from ..tokens import Keys, mint_token
from ..web import logfilters
from ..web.app import create_app
from ..web.connections import GuardedAppRunner, raise_open_file_limit
from ..web.middleware import shutdown
from ..web.middleware.shutdown import CANCELLED_GRACE_SECONDS
from . import logs

log = logging.getLogger(__name__)


def setup_logging(settings: Settings, worker: int | None = None) -> None:
    """A server process's logging: every command's (cli.logs), and one line instead of a traceback for
    asyncpg's reconnect retries and for unparsable requests."""
    logs.setup_logging(settings, worker)
    logfilters.install()


def banner_token(keys: Keys, settings: Settings) -> str | None:
    """A fresh token for the banner when a person reads it (stdout a terminal), else None: a service
    manager's log keeps what it captures, and a live token has no place there."""
    if not sys.stdout.isatty():
        return None
    return mint_token(keys, subject="banner", ttl=settings.token_ttl)


def banner(settings: Settings, catalog: Catalog, database: str, token: str | None) -> str:
    """What the server prints once it serves: commands to paste with `token` in them, or, without one,
    with $TOKEN and the command that mints it."""
    base = settings.base_url
    auth = f'-H "Authorization: JWT {token or "$TOKEN"}"'
    path = catalog.example_path
    if token is None:
        lines = [
            "Try it (no token is printed where the output is not a terminal: mint one with the first command):",
            "",
            "  TOKEN=$(python run.py token)",
        ]
        browser = [f"See it stream in a browser: open {base}/ and paste a token into its Token field."]
    else:
        lines = [
            f"Try it (this token is valid for {settings.token_ttl // 60} min; `python run.py token` mints another):",
            "",
        ]
        browser = [
            "See it stream in a browser (the token rides in the fragment, never sent to the server):",
            "",
            f"  {base}/#token={token}",
        ]
    return "\n".join(
        [
            "",
            f"streaming_api: serving {catalog.summary()} on {base} ({database})",
            *lines,
            f"  curl -H 'Accept: text/plain' {auth} '{base}/chunked{path}?limit=5'",
            f"  curl -sS {auth} {base}/chunked{path} | wc -l",
            f"  curl -sS {auth} {base}/standard{path} | wc -l",
            f"  curl -sS {auth} {base}/tables",
            "",
            *browser,
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


@dataclass(frozen=True)
class StopSignals:
    """What ends a server process: a `stop` signal drains it (requests in flight get shutdown_timeout), a
    `cut` signal ends its requests in flight now; with `again_cuts`, a stop signal that comes again cuts."""

    stop: tuple[signal.Signals, ...]
    cut: tuple[signal.Signals, ...] = ()
    again_cuts: bool = True


# `run.py serve`: Ctrl+C, SIGTERM from a service manager, SIGHUP when the terminal closes; any of them again
# (a second Ctrl+C) cuts what is still in flight rather than wait for it.
STOP_SIGNALS = StopSignals(stop=(signal.SIGINT, signal.SIGTERM, signal.SIGHUP))


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
    signals: StopSignals = STOP_SIGNALS,
) -> web.Application:
    """Serve the app on a listening socket until a stop signal, then shut it down gracefully (requests in
    flight get shutdown_timeout, unless a cut signal ends them first; the pool and the database are let go).
    Returns the app."""
    open_files = raise_open_file_limit()
    app = create_app(settings, seed_progress=seed_progress)
    # on_shutdown (shutdown.finish_in_flight) already waited shutdown_timeout: aiohttp's own is a backstop.
    runner = GuardedAppRunner.for_app(app, open_files, shutdown_timeout=CANCELLED_GRACE_SECONDS)
    stopping = asyncio.Event()
    started = asyncio.Event()
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    assert main is not None

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        cut = signum in signals.cut or (stopping.is_set() and signals.again_cuts)
        if not stopping.is_set():
            stopping.set()
            log.info("stopping (%s): no new connections; requests in flight may finish", name)
            if not started.is_set():
                main.cancel()  # still starting (seeding, say): stop that at once
        if cut:
            log.warning("stopping now (%s): %d request(s) in flight cut short", name, shutdown.cut_in_flight(app))

    # Kept until the end: a signal during the drain is a request to hurry, never a KeyboardInterrupt.
    for signum in (*signals.stop, *signals.cut):
        loop.add_signal_handler(signum, on_signal, signum)
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
        try:
            await runner.cleanup()
            sock.close()
        finally:
            for signum in (*signals.stop, *signals.cut):
                loop.remove_signal_handler(signum)
    return app
