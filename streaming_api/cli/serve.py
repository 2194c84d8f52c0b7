"""`run.py serve` (the default): run the HTTP server until Ctrl+C or SIGTERM."""

from __future__ import annotations

import argparse

from aiohttp import web

from ..settings import Settings
from ..web.connections import listening_socket
from ..web.keys import CATALOG, DATABASE, DATABASE_STATE, KEYS
from . import SUMMARIES
from .console import StatusLine, rows_bar
from .running import banner, banner_token, run_loop, serve_on, setup_logging

__all__ = ["add_parser", "run", "serve", "setup_logging"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    serve = sub.add_parser(
        "serve",
        help=SUMMARIES["serve"],
        description="Run the HTTP server. Starts the embedded PostgreSQL when no DATABASE_URL is set (and "
        "seeds its demo table on first start); a database at DATABASE_URL is only read.",
    )
    serve.add_argument("--host", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, help="port to bind (default 8080)")
    serve.add_argument(
        "--workers", help="server processes sharing the port: a number, or auto for one per core (default 1)"
    )


def run(settings: Settings, args: argparse.Namespace) -> int:
    if settings.worker_count > 1:
        from .workers import supervise

        return run_loop(supervise(settings))
    return run_loop(serve(settings))


async def serve(settings: Settings) -> None:
    """One process: start (socket, database, pool), serve until a stop signal, then stop in order and say so."""

    def announce(app: web.Application) -> None:
        print(banner(settings, app[CATALOG], app[DATABASE], banner_token(app[KEYS], settings)), flush=True)

    # The port first: a port in use is a one-line error at once, not after the database has started.
    sock = listening_socket(settings.host, settings.port)
    app = await serve_on(settings, sock, announce, seed_progress=rows_bar(StatusLine()))
    also = f"; so is the {app[DATABASE]}" if app[DATABASE_STATE].stopped else ""
    print(f"streaming_api: stopped{also}", flush=True)
