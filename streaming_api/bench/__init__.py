"""The comparison benchmark: /standard and /chunked side by side, against PostgreSQL's own export speed.

`python run.py bench` (see add_arguments for the options); runner.py holds the plan, client.py the timed
client, floor.py the COPY floor, server.py the server the bench starts, report.py and plot.py the output.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from ..config import Settings
from ..formats import FORMATS

ENDPOINTS = ("standard", "chunked")


def _positive_list(text: str) -> tuple[int, ...]:
    values = []
    for item in text.split(","):
        try:
            value = int(item.strip().replace("_", ""))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{item.strip()!r} is not a whole number") from None
        if value < 1:
            raise argparse.ArgumentTypeError(
                f"{value} is not a positive number (separate values with commas; write 500000 or 500_000 for one)"
            )
        values.append(value)
    return tuple(dict.fromkeys(values))


def _names(allowed: tuple[str, ...]):
    def parse(text: str) -> tuple[str, ...]:
        names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
        unknown = [n for n in names if n not in allowed]
        if unknown or not names:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)} (comma-separated), got {text!r}")
        return names

    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
        type=_positive_list,
        help="rows per request, comma-separated for several sizes (default 500000); the bench's own database "
        "is seeded to each size; with --url, sent as ?limit= (default: the whole table)",
    )
    parser.add_argument("--repeat", type=int, default=5, help="measured runs per level, after one warm-up (default 5)")
    parser.add_argument(
        "--concurrency",
        type=_positive_list,
        default=(1, 8, 32),
        help="clients started together, comma-separated levels (default 1,8,32)",
    )
    parser.add_argument(
        "--formats",
        type=_names(tuple(FORMATS)),
        default=("ndjson", "csv", "json"),
        help="comma-separated, from ndjson,csv,json,text (default ndjson,csv,json)",
    )
    parser.add_argument(
        "--endpoints", type=_names(ENDPOINTS), default=ENDPOINTS, help="comma-separated (default standard,chunked)"
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


def main(settings: Settings, args: argparse.Namespace) -> int:
    from .progress import Progress
    from .report import document, render, write_json
    from .runner import Options, run_bench

    if args.repeat < 1:
        print("error: --repeat must be at least 1", file=sys.stderr)
        return 2
    if args.url is None and (args.token or args.database_url):
        print("error: --token and --database-url go with --url", file=sys.stderr)
        return 2
    if args.url is not None:
        from .client import Target

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
    progress = Progress(quiet=args.quiet)

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
        from .plot import plot

        plot(doc, args.plot)
        print(f"Plot: {args.plot}")
    if not doc["ok"]:
        print(f"\nbench: {len(doc['failures'])} response(s) FAILED verification (see above)", file=sys.stderr)
        return 1
    return 0
