"""`run.py bench`: the comparison benchmark's command line and its live display (the bench itself is bench/)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..bench.report import render
from ..bench.results import Options, RunResult
from ..bench.runner import run_bench
from ..bench.stats import document, write_json
from ..bench.wire import Received, Target
from ..export.formats import FORMATS
from ..settings import Settings
from .args import names, positive, positive_list
from .console import StatusLine, rows_bar

ENDPOINTS = ("standard", "chunked")
TICK_SECONDS = 0.25


class BenchConsole:
    """The bench's progress on one status line on a terminal; one line per run otherwise (unless quiet)."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.line = StatusLine(enabled=None if not quiet else False)
        self._ticker: asyncio.Task[None] | None = None

    def stage(self, text: str) -> None:
        self.line.show(text)

    def seeding(self) -> Callable[[int, int], None] | None:
        return rows_bar(self.line)

    def run_started(self, label: str, received: list[Received]) -> None:
        if not self.line.live:
            return
        started = time.perf_counter()

        async def tick() -> None:
            # Reads counters the recorders keep anyway; costs the client next to nothing.
            while True:
                nbytes = sum(r.nbytes for r in received)
                self.line.show(f"{label}: {nbytes / 1e6:,.1f} MB in {time.perf_counter() - started:,.1f} s")
                await asyncio.sleep(TICK_SECONDS)

        self._ticker = asyncio.get_running_loop().create_task(tick())

    def run_finished(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def run_done(self, label: str, run: RunResult) -> None:
        if self.quiet:
            return
        failed = sum(not r.verified for r in run.requests)
        verdict = "verified" if not failed else f"{failed} of {len(run.requests)} FAILED verification"
        text = f"{label}: {run.wall_ms / 1000:,.3f} s, {sum(r.bytes for r in run.requests) / 1e6:,.1f} MB, {verdict}"
        if self.line.live:
            self.line.show(text)
        else:
            self.line.print(text)

    async def aclose(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        self.line.clear()


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bench",
        help="compare /standard and /chunked against PostgreSQL's own export speed",
        description="Time /standard and /chunked side by side (client and server figures, memory, "
        "concurrency) against COPY of the same rows, verify every body, print a table.",
    )
    parser.add_argument(
        "--url",
        help="benchmark a server that is already running (default: start one, with its own embedded database)",
    )
    parser.add_argument("--token", help="JWT for --url (default: one minted with this checkout's settings)")
    parser.add_argument(
        "--database-url",
        help="with --url: the server's PostgreSQL, to measure the COPY floor against (default: the database_url "
        "setting; none means no floor)",
    )
    parser.add_argument(
        "--rows",
        type=positive_list,
        help="rows per request, comma-separated for several sizes (default 500000); the bench's own database "
        "is seeded to each size; with --url, sent as ?limit= (default: the whole table)",
    )
    parser.add_argument(
        "--repeat", type=positive, default=5, help="measured runs per level, after one warm-up (default 5)"
    )
    parser.add_argument(
        "--concurrency",
        type=positive_list,
        default=(1, 8, 32),
        help="clients started together, comma-separated levels (default 1,8,32)",
    )
    parser.add_argument(
        "--formats",
        type=names(tuple(FORMATS)),
        default=("ndjson", "csv", "json"),
        help="comma-separated, from ndjson,csv,json,text (default ndjson,csv,json)",
    )
    parser.add_argument(
        "--endpoints", type=names(ENDPOINTS), default=ENDPOINTS, help="comma-separated (default standard,chunked)"
    )
    parser.add_argument(
        "--healthz-probe",
        action="store_true",
        help="while more than one client runs, GET /healthz every 10 ms and report its latency (p50, p99, max)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every raw figure, and the machine, here")
    parser.add_argument("--plot", type=Path, metavar="PATH.png", help="draw the three-panel comparison here")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="where the bench's own embedded database lives (default: <data_dir setting>/bench)",
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds one run (all its clients) may take (default 900)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress display, only the table")


def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.url is None and (args.token or args.database_url):
        print("error: --token and --database-url go with --url", file=sys.stderr)
        return 2
    if args.url is not None:
        try:
            Target.from_url(args.url, None)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    options = Options(
        url=args.url,
        token=args.token,
        database_url=args.database_url or (settings.database_url if args.url else None),
        rows=args.rows,
        repeat=args.repeat,
        concurrency=tuple(sorted(args.concurrency)),
        formats=args.formats,
        endpoints=args.endpoints,
        healthz_probe=args.healthz_probe,
        data_dir=args.data_dir,
        timeout=args.timeout,
    )
    progress = BenchConsole(quiet=args.quiet)

    async def bench() -> dict:
        try:
            return document(await run_bench(options, settings, progress))
        finally:
            await progress.aclose()

    doc = asyncio.run(bench())
    print(render(doc), flush=True)
    if args.json:
        write_json(doc, args.json)
        print(f"\nEvery figure: {args.json}")
    if args.plot:
        from ..bench.plot import plot

        plot(doc, args.plot)
        print(f"Plot: {args.plot}")
    if not doc["ok"]:
        print(f"\nbench: {len(doc['failures'])} response(s) FAILED verification (see above)", file=sys.stderr)
        return 1
    return 0
