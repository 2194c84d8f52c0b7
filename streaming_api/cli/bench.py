"""`run.py bench`: the comparison benchmark's command line and its live display (the bench itself is bench/)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..bench.coding import CODINGS
from ..bench.estimate import describe_duration, estimate_seconds
from ..bench.filtering import BadFilter, pairs
from ..bench.link import SHAPERS, LinkError, kernel_shaping_available
from ..bench.linkspec import LinkSpec, parse_link
from ..bench.report import render
from ..bench.results import Options, RunResult
from ..bench.runner import run_bench
from ..bench.stats import document, write_json
from ..bench.subject import SubjectError
from ..bench.wire import Received, Target
from ..db.demo import DEMO_TABLES
from ..export.formats import FORMATS
from ..settings import Settings
from . import SUMMARIES
from .args import names, positive, positive_list
from .console import StatusLine, rows_bar
from .signals import Stopped
from .signals import run as run_stoppable

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

    def link(self, description: dict) -> None:
        # Always said, even with --quiet: which kind of link the figures come from.
        self.line.print(f"bench: link {description['label']}: {description['how']}")

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


# The default: about a minute on two cores, and still the whole point (first rows long before /standard's
# first byte, flat memory against /standard's growth, the ratio to PostgreSQL's own COPY).
QUICK = {"formats": ("ndjson",), "concurrency": (1, 8), "repeat": 3}
PAGE_SIZE_RANGE = range(1, Settings.max_page_size + 1)
# --full: every format but text (csv by another name) at 1, 8 and 32 clients: about 15 minutes on two cores.
FULL = {"formats": ("ndjson", "csv", "json", "arrow"), "concurrency": (1, 8, 32), "repeat": 5}


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "bench",
        help=SUMMARIES["bench"],
        description="Time /standard and /chunked side by side (client and server figures, memory, "
        "concurrency) against COPY of the same rows, verify every body, print a table. By default a run of "
        "about a minute on two cores (NDJSON, 1 and 8 clients, 3 runs each); --full runs the whole matrix.",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="ndjson, csv, json and arrow at 1, 8 and 32 clients, 5 runs each: about 15 minutes on two cores",
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
        "--table",
        default="points",
        help="the table measured (default points): with the bench's own database a demo table, points, orders "
        "(13 columns of mixed types) or blobs (2 MB a row); with --url any table the server serves, as "
        "/tables names it",
    )
    parser.add_argument(
        "--rows",
        type=positive_list,
        help="rows per request, comma-separated for several sizes (default 500000; blobs 200, 400 MB); the "
        "bench's own database is seeded to each size; with --url, sent as ?limit= (default: the whole table)",
    )
    parser.add_argument(
        "--repeat", type=positive, help="measured runs per level, after one warm-up (default 3; 5 with --full)"
    )
    parser.add_argument(
        "--concurrency",
        type=positive_list,
        help="clients started together, comma-separated levels (default 1,8; 1,8,32 with --full)",
    )
    parser.add_argument(
        "--formats",
        type=names(tuple(FORMATS)),
        help="comma-separated, from ndjson,csv,json,text,arrow (default ndjson; ndjson,csv,json,arrow with --full)",
    )
    parser.add_argument(
        "--endpoints", type=names(ENDPOINTS), default=ENDPOINTS, help="comma-separated (default standard,chunked)"
    )
    parser.add_argument(
        "--workers",
        type=positive,
        default=1,
        help="worker processes of the bench's own server (serve --workers; default 1)",
    )
    parser.add_argument(
        "--healthz-probe",
        action="store_true",
        help="while more than one client runs, GET /healthz every 10 ms and report its latency (p50, p99, max)",
    )
    parser.add_argument(
        "--link",
        type=link_type,
        action="append",
        metavar="RATE[,RTT]",
        help="run the plan with the client across a shaped link, e.g. 100mbit,20ms (several --link allowed; "
        "'loopback' for none): tbf on a veth pair into a network namespace when root, else a shaping relay",
    )
    parser.add_argument(
        "--shaper",
        choices=SHAPERS,
        default="auto",
        help="how a --link is built: tbf (root, ip and tc), relay (user space), auto (tbf when it can; default)",
    )
    parser.add_argument(
        "--encodings",
        type=names(CODINGS),
        default=("identity",),
        help="content codings asked for (Accept-Encoding), one group each: identity,gzip,zstd (default identity)",
    )
    parser.add_argument(
        "--page-sizes",
        type=page_sizes,
        help="/chunked's ?page_size=, one group each, e.g. 100,1000,10000 (default: the server's page_size)",
    )
    parser.add_argument(
        "--snapshots",
        type=names(("on", "off")),
        default=("on",),
        help="/chunked with its snapshot (on) and without (off: ?snapshot=off), one group each, e.g. on,off "
        "(default on)",
    )
    parser.add_argument(
        "--filter",
        dest="filters",
        action="append",
        type=filter_query,
        metavar="QUERY",
        help="filters as a URL query, e.g. 'value=gte.0' or 'id=gt.1000&x=lt.100', one group each on both "
        "endpoints, its floor the COPY of the rows it keeps; repeat it, 'none' for every row (default: none)",
    )
    parser.add_argument(
        "--json", type=Path, metavar="PATH", help="every raw figure, and the machine (default: <data dir>/bench.json)"
    )
    parser.add_argument(
        "--plot", type=Path, metavar="PATH.png", help="the three-panel comparison (default: <data dir>/bench.png)"
    )
    parser.add_argument(
        "--plot-transfer",
        type=Path,
        metavar="PATH.png",
        help="with --link, --encodings or --page-sizes: rows decoded over time per link and coding, bytes on the "
        "wire, page sizes (default: beside --plot, <name>-transfer.png)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="where the bench's own embedded database, its server's log and its outputs go "
        "(default: <data_dir setting>/bench)",
    )
    parser.add_argument(
        "--timeout", type=float, default=900.0, help="seconds one run (all its clients) may take (default 900)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress display, only the table")


def link_type(text: str) -> LinkSpec | None:
    """--link's value: RATE[,RTT], or "loopback" for none (to run both in one plan)."""
    if text.strip().lower() in ("loopback", "none"):
        return None
    try:
        return parse_link(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def page_sizes(text: str) -> tuple[int, ...]:
    values = positive_list(text)
    wrong = [v for v in values if v not in PAGE_SIZE_RANGE]
    if wrong:
        raise argparse.ArgumentTypeError(f"page sizes are 1..10,000 rows, got {wrong[0]:,}")
    return values


def plan(args: argparse.Namespace) -> dict[str, Any]:
    """formats, concurrency and repeat: as given, else from --full or the quick default."""
    preset = FULL if args.full else QUICK
    return {name: getattr(args, name) if getattr(args, name) is not None else preset[name] for name in preset}


def outputs(args: argparse.Namespace, data_path: Path) -> tuple[Path, Path]:
    """Where the JSON and the plot go: as given, else into the bench's data directory (never over docs/)."""
    return (args.json or data_path / "bench.json", args.plot or data_path / "bench.png")


def run(settings: Settings, args: argparse.Namespace) -> int:
    if args.url is None and (args.token or args.database_url):
        print("error: --token and --database-url go with --url", file=sys.stderr)
        return 2
    if args.url is None and args.table not in DEMO_TABLES:
        print(
            f"error: --table {args.table}: the bench's own database holds only the demo tables "
            f"({', '.join(DEMO_TABLES)}); to measure a table of yours, give --url (and --database-url for the floor)",
            file=sys.stderr,
        )
        return 2
    if args.url is not None:
        try:
            Target.from_url(args.url, None)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    links = tuple(dict.fromkeys(args.link or ()))
    if args.url is not None and any(links):
        print(
            "error: --link needs the bench's own server (it puts the link between its client and its server; "
            "a server at --url is across whatever link there is already)",
            file=sys.stderr,
        )
        return 2
    if args.shaper == "tbf" and any(links) and (why := kernel_shaping_available()):
        print(
            f"error: --shaper tbf needs root on Linux with ip and tc ({why}); --shaper relay works anywhere",
            file=sys.stderr,
        )
        return 2
    chosen = plan(args)
    options = Options(
        url=args.url,
        token=args.token,
        database_url=args.database_url or (settings.database_url if args.url else None),
        table=args.table,
        rows=args.rows,
        repeat=chosen["repeat"],
        concurrency=tuple(sorted(chosen["concurrency"])),
        formats=chosen["formats"],
        endpoints=args.endpoints,
        healthz_probe=args.healthz_probe,
        workers=args.workers,
        data_dir=args.data_dir,
        timeout=args.timeout,
        encodings=args.encodings,
        page_sizes=args.page_sizes,
        snapshots=args.snapshots,
        filters=tuple(dict.fromkeys(args.filters or (None,))),
        links=links,
        shaper=args.shaper,
    )
    json_path, plot_path = outputs(args, options.data_path(settings))
    if not args.quiet:
        print(
            f"bench: {describe_plan(options)}: {describe_duration(estimate_seconds(options))} on two cores"
            f"{'' if args.full else ' (--full: the whole matrix)'}",
            file=sys.stderr,
            flush=True,
        )
    progress = BenchConsole(quiet=args.quiet)

    async def bench() -> dict:
        try:
            return document(await run_bench(options, settings, progress))
        finally:
            await progress.aclose()

    try:
        doc = run_stoppable(bench())
    except Stopped as exc:
        stopped = "its server, database and link are" if any(links) else "its server and database are"
        print(f"bench: {exc}; {stopped} stopped", file=sys.stderr)
        return exc.exit_code
    except LinkError as exc:
        print(f"bench: the link could not be built: {exc}", file=sys.stderr)
        return 1
    except (SubjectError, BadFilter) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(render(doc), flush=True)
    write_json(doc, json_path)
    print(f"\nEvery figure: {json_path}")
    # The plot modules import matplotlib only once they draw: ask before, not after a traceback.
    if importlib.util.find_spec("matplotlib") is None:
        print("Plot: skipped (matplotlib is not installed: pip install 'streaming_api[bench]')")
    else:
        from ..bench.plot import plot
        from ..bench.plot_transfer import plot_transfer, transfer_path, wanted

        plot(doc, plot_path)
        print(f"Plot: {plot_path}")
        if wanted(doc):
            transfer = args.plot_transfer or transfer_path(plot_path)
            plot_transfer(doc, transfer)
            print(f"Plot of the links, codings and page sizes: {transfer}")
    if not doc["ok"]:
        print(f"\nbench: {len(doc['failures'])} response(s) FAILED verification (see above)", file=sys.stderr)
        return 1
    return 0


def filter_query(text: str) -> str | None:
    """--filter: a query of filters (bench.filtering), or none for every row."""
    if text == "none":
        return None
    try:
        pairs(text)
    except BadFilter as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def describe_plan(options: Options) -> str:
    if options.url is not None and not options.rows:
        rows = "the whole table"
    else:
        rows = ", ".join(f"{r:,}" for r in options.sizes) + " rows"
    levels = ", ".join(str(c) for c in options.concurrency)
    extra = ""
    if options.encodings != ("identity",):
        extra += f" × {', '.join(options.encodings)}"
    if options.page_sizes:
        extra += f" × /chunked pages of {', '.join(f'{p:,}' for p in options.page_sizes)}"
    if "off" in options.snapshots:
        extra += " × /chunked " + " and ".join(f"snapshot {s}" for s in options.snapshots)
    if options.filters != (None,):
        extra += " × filters " + ", ".join(query or "none" for query in options.filters)
    if options.links:
        extra += f" over {', '.join(link.label if link else 'loopback' for link in options.links)}"
    return (
        f"{options.table}: {' and '.join(options.endpoints)} × {', '.join(options.formats)}{extra} × {rows}, "
        f"{levels} client{'s' if options.concurrency != (1,) else ''}, {options.repeat} run"
        f"{'s' if options.repeat != 1 else ''} each"
    )
