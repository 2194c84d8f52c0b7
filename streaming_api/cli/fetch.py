"""`run.py fetch`: download an export to a file or stdout, resuming after drops (see client.download)."""

from __future__ import annotations

import argparse
import errno
import importlib.util
import json
import os
import signal
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from yarl import URL

from ..client.download import FETCH_FORMATS, PARQUET, FetchResult, OutputError, download, written_in_place
from ..client.errors import CannotResume, GaveUp, RequestRejected, Retry, RowCount, Unauthorized
from ..client.records import FORMATS, BodyError
from ..settings import Settings
from . import SUMMARIES
from .args import non_negative, positive
from .console import StatusLine, transfer_text
from .signals import Stopped
from .signals import run as run_stoppable

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAUTHORIZED = 3
EXIT_REJECTED = 4
EXIT_GAVE_UP = 5
EXIT_INTERRUPTED = 130
# stdout's reader closed the pipe (`fetch | head`): ended quietly, with the status of a tool SIGPIPE ends.
EXIT_PIPE_CLOSED = 128 + signal.SIGPIPE
# The time left is shown once the rate has been measured over this long.
RATE_AFTER_SECONDS = 0.5

EXIT_CODES_HELP = f"""exit codes:
  {EXIT_OK}    the download is complete (and, with --out, moved into place)
  {EXIT_FAILED}    failed otherwise: a malformed body, or the output could not be written
  {EXIT_USAGE}    bad arguments or settings
  {EXIT_UNAUTHORIZED}    401 unauthorized: the token is missing, expired or signed with another key
  {EXIT_REJECTED}    400 bad request (or another 4xx): the server refused a parameter or the URL
  {EXIT_GAVE_UP}    gave up: the connection kept failing (--retries retries in a row brought no row), or it
       dropped and there was no key to resume after (a view, or --columns without the key), or the
       first one was refused (nothing listens at the URL: said at once, not retried)
  {EXIT_INTERRUPTED}  interrupted (Ctrl+C)
  {EXIT_PIPE_CLOSED}  stdout's reader closed the pipe (fetch ... | head): nothing printed
"""


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    fetch = sub.add_parser(
        "fetch",
        help=SUMMARIES["fetch"],
        description="Download rows from /chunked (or --url) to a file or stdout.\n\n"
        "A dropped connection resumes after the last whole row received. A file is written under a\n"
        "temporary name beside --out and moved into place only when complete. Stdout, a device or a FIFO\n"
        "is written into as the rows come (a failed download leaves what it wrote; the exit code says so).",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fetch.add_argument(
        "--url", help="endpoint URL, table included (default: http://HOST:PORT/chunked[/TABLE] from the settings)"
    )
    fetch.add_argument("--table", help="the served table to fetch, as /tables names it (default: the default table)")
    fetch.add_argument("--token", help="JWT to send (default: mint one with the local settings' key)")
    fetch.add_argument(
        "--format",
        choices=FETCH_FORMATS,
        default="ndjson",
        help="what to write (default: ndjson): the server's ndjson, csv, json or text as they are; arrow, an Arrow "
        "IPC stream file; parquet, a Parquet file written here from the Arrow stream (needs --out)",
    )
    fetch.add_argument("--out", type=Path, help="file to write (default: stdout)")
    fetch.add_argument("--limit", type=non_negative, help="at most this many rows (default: all)")
    fetch.add_argument(
        "--after",
        help="start after this key value: the value, or a JSON array for a key of several columns (default: the start)",
    )
    fetch.add_argument("--after-id", type=non_negative, help="start after this id (a key of one integer column)")
    fetch.add_argument("--page-size", type=positive, help="rows per chunk (/chunked only; default: the server's)")
    fetch.add_argument(
        "--columns",
        help="comma-separated columns, in this order (default: all); without the table's key a drop cannot be resumed",
    )
    fetch.add_argument(
        "--retries",
        type=non_negative,
        default=5,
        help="retries in a row that bring no row before giving up; waits 0.5, 1, 2, 4, 8, 8... s (default: 5)",
    )
    fetch.add_argument(
        "--no-compression",
        dest="compressed",
        action="store_false",
        help="ask for the body uncompressed (by default it travels zstd-compressed, decoded as it arrives)",
    )
    return fetch


def table_path(table: str | None) -> str:
    """/chunked, or /chunked/<table> with the name percent-encoded."""
    return "/chunked" if table is None else "/chunked/" + urllib.parse.quote(table, safe="")


def default_url(settings: Settings, table: str | None = None) -> str:
    return settings.base_url + table_path(table)


def endpoint_url(url: str, table: str | None = None) -> str:
    """A URL without a path means the server: fetch from its /chunked (or /chunked/<table>)."""
    parsed = URL(url)
    if not parsed.is_absolute() or parsed.scheme not in ("http", "https"):
        raise ValueError(f"--url must be an http(s) URL, got {url[:100]!r}")
    if parsed.path in ("", "/"):
        return str(parsed.with_path(table_path(table), encoded=True))
    if table is not None:
        raise ValueError("--table names the table in --url's path: give --url without a path, or no --table")
    return url


def after_option(raw: str | None) -> list[str] | str | None:
    """--after as the client takes it: a JSON array's values, or the one value as it is."""
    if raw is None or not raw.startswith("["):
        return raw
    try:
        values = json.loads(raw, parse_int=str, parse_float=str)
    except ValueError:
        raise ValueError(f"--after: not a JSON array: {raw[:100]!r}") from None
    if not isinstance(values, list):
        raise ValueError("--after: a JSON array of the key's values")
    return [str(value) for value in values]


@dataclass
class Transferred:
    """What has arrived so far (for the line an interrupted download prints), and how many rows to expect."""

    rows: int = 0
    bytes: int = 0
    expected: RowCount | None = None


def duration_text(seconds: float) -> str:
    """12 s, 4.2 s, 3 min 05 s, 1 h 02 min."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def progress_text(rows: int, nbytes: int, seconds: float, expected: RowCount | None, rate: float | None = None) -> str:
    """rows, MB and rows/s so far; with a count, the share done, and with a `rate` (rows/s) the time left
    ("~" when the count is an estimate)."""
    text = transfer_text(rows, nbytes, seconds)
    if expected is None or expected.rows <= 0:
        return text
    about = "" if expected.exact else "~"
    text += f"  {about}{min(rows / expected.rows, 1):.0%} of {expected}"
    if rate and rows < expected.rows:
        text += f", {about}{duration_text((expected.rows - rows) / rate)} left"
    return text


async def download_with_progress(
    url: str,
    token: str,
    args: argparse.Namespace,
    messages: TextIO | None = None,
    transferred: Transferred | None = None,
) -> FetchResult:
    """The download with its progress line on a terminal, and a line per retry, on `messages` (stderr)."""
    line = StatusLine(messages)
    started = time.perf_counter()
    so_far = transferred or Transferred()
    # The rate for the time left runs from the first rows on: the wait for them would skew it.
    first: tuple[float, int] | None = None

    def on_retry(event: Retry) -> None:
        line.print(f"fetch: {event}")

    def on_progress(rows: int, nbytes: int) -> None:
        nonlocal first
        now = time.perf_counter()
        so_far.rows, so_far.bytes = rows, nbytes
        first = first or (now, rows)
        measured, since = now - first[0], rows - first[1]
        rate = since / measured if measured >= RATE_AFTER_SECONDS and since > 0 else None
        line.show(progress_text(rows, nbytes, now - started, so_far.expected, rate), throttle=True)

    def on_count(count: RowCount) -> None:
        so_far.expected = count

    try:
        result = await download(
            url,
            token,
            args.format,
            args.out,
            limit=args.limit,
            after_id=args.after_id,
            after=after_option(args.after),
            page_size=args.page_size,
            columns=args.columns,
            retries=args.retries,
            on_retry=on_retry,
            on_progress=on_progress,
            on_count=on_count,
            compressed=args.compressed,
        )
    except BaseException:
        line.finish()
        raise
    line.finish(transfer_text(result.rows, result.bytes, result.seconds))
    return result


def _format_problem(args: argparse.Namespace) -> str | None:
    """Why the format cannot be written here, if it cannot."""
    if args.format in FORMATS:
        return None
    if importlib.util.find_spec("pyarrow") is None:
        return f"--format {args.format} needs pyarrow: pip install 'streaming_api[arrow]'"
    if args.format == PARQUET and args.out is None:
        return "--format parquet writes a file: give --out (Parquet cannot be streamed to stdout)"
    return None


def _minted(settings: Settings) -> str:
    from ..tokens import load_keys, mint_token  # PyJWT: loaded only when no --token is given

    return mint_token(load_keys(settings), subject="fetch", ttl=settings.token_ttl)


def run(settings: Settings, args: argparse.Namespace) -> int:
    """The `fetch` subcommand: its exit code (see EXIT_CODES_HELP)."""
    try:
        url = endpoint_url(args.url, args.table) if args.url else default_url(settings, args.table)
        token = args.token or _minted(settings)
        after_option(args.after)
        if args.after is not None and args.after_id is not None:
            raise ValueError("give --after or --after-id, not both")
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"fetch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.out is not None and not args.out.resolve().parent.is_dir():
        print(f"fetch: no such directory for --out: {args.out.resolve().parent}", file=sys.stderr)
        return EXIT_USAGE
    if args.out is not None and args.out.is_dir():
        print(f"fetch: --out is a directory: name a file in it ({args.out})", file=sys.stderr)
        return EXIT_USAGE
    if problem := _format_problem(args):
        print(f"fetch: {problem}", file=sys.stderr)
        return EXIT_USAGE
    so_far = Transferred()
    try:
        result = run_stoppable(download_with_progress(url, token, args, transferred=so_far))
    except (KeyboardInterrupt, Stopped) as exc:
        if not written_in_place(args.out):
            kept = f"{args.out} not written (a download is moved into place only when complete)"
        else:
            kept = f"what went to {args.out or 'stdout'} is incomplete"
        how = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
        print(f"fetch: {how} after {so_far.rows:,} rows ({so_far.bytes / 1e6:.1f} MB): {kept}", file=sys.stderr)
        return EXIT_INTERRUPTED if isinstance(exc, KeyboardInterrupt) else exc.exit_code
    except Unauthorized as exc:
        print(f"fetch: {exc}", file=sys.stderr)
        return EXIT_UNAUTHORIZED
    except RequestRejected as exc:
        print(f"fetch: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except (GaveUp, CannotResume) as exc:
        print(f"fetch: {exc}", file=sys.stderr)
        return EXIT_GAVE_UP
    except OutputError as exc:
        if args.out is None:
            # What stdout's buffer still holds would fail again at exit, with a traceback of its own.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            if exc.errno == errno.EPIPE:
                return EXIT_PIPE_CLOSED
        print(f"fetch: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (BodyError, OSError, ValueError) as exc:
        print(f"fetch: {exc}", file=sys.stderr)
        return EXIT_FAILED
    where = f" into {args.out}" if args.out is not None else ""
    resumed = f", resumed {result.retries} time{'s' if result.retries != 1 else ''}" if result.retries else ""
    print(
        f"fetch: {result.rows:,} rows, {result.bytes / 1e6:.1f} MB{where} in {result.seconds:.1f} s{resumed}",
        file=sys.stderr,
    )
    return EXIT_OK
