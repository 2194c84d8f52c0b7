"""`run.py fetch`: download an export to a file (or stdout), resuming after drops; whole or nothing.

The file holds the server's own bytes: the header (CSV) or "[" (JSON) of the first response, then
every record exactly as received, joined with the format's separators. A download that resumed
is byte for byte the one that did not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

from yarl import URL

from .auth import load_keys, mint_token
from .client import FORMATS, Batch, GaveUp, RequestRejected, Retry, Unauthorized, stream_batches
from .config import Settings
from .parsing import BodyError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_UNAUTHORIZED = 3
EXIT_REJECTED = 4
EXIT_GAVE_UP = 5
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = f"""exit codes:
  {EXIT_OK}    the download is complete (and, with --out, moved into place)
  {EXIT_FAILED}    failed otherwise: a malformed body, or the output could not be written
  {EXIT_USAGE}    bad arguments or settings
  {EXIT_UNAUTHORIZED}    401 unauthorized: the token is missing, expired or signed with another key
  {EXIT_REJECTED}    400 bad request (or another 4xx): the server refused a parameter or the URL
  {EXIT_GAVE_UP}    gave up: the connection kept failing (--retries retries in a row brought no row)
  {EXIT_INTERRUPTED}  interrupted (Ctrl+C)
"""

# Between records, and after the last one, as the service writes each format.
SEPARATORS = {"ndjson": b"\n", "csv": b"\n", "text": b"\n", "json": b",\n"}
CLOSINGS = {"ndjson": b"", "csv": b"", "text": b"", "json": b"]\n"}


def add_fetch_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from .cli import _non_negative, _positive

    fetch = sub.add_parser(
        "fetch",
        help="download an export to a file, resuming after drops",
        description="Download rows from /chunked (or --url) to a file or stdout.\n\n"
        "A dropped connection resumes after the last whole row received. The file is written under a\n"
        "temporary name beside --out and moved into place only when complete (to stdout, a failed\n"
        "download leaves what it wrote; the exit code says so).",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    fetch.add_argument("--url", help="endpoint URL (default: http://HOST:PORT/chunked from the settings)")
    fetch.add_argument("--token", help="JWT to send (default: mint one with the local settings' key)")
    fetch.add_argument("--format", choices=FORMATS, default="ndjson", help="body format (default: ndjson)")
    fetch.add_argument("--out", type=Path, help="file to write (default: stdout)")
    fetch.add_argument("--limit", type=_non_negative, help="at most this many rows (default: all)")
    fetch.add_argument("--after-id", type=_non_negative, default=0, help="start after this id (default: 0)")
    fetch.add_argument("--page-size", type=_positive, help="rows per chunk (/chunked only; default: the server's)")
    fetch.add_argument(
        "--retries",
        type=_non_negative,
        default=5,
        help="retries in a row that bring no row before giving up; waits 0.5, 1, 2, 4, 8, 8... s (default: 5)",
    )
    return fetch


def default_url(settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in ("", "0.0.0.0", "::") else settings.host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{settings.port}/chunked"


def endpoint_url(url: str) -> str:
    """A URL without a path means the server: fetch from its /chunked."""
    parsed = URL(url)
    if not parsed.is_absolute() or parsed.scheme not in ("http", "https"):
        raise ValueError(f"--url must be an http(s) URL, got {url[:100]!r}")
    return str(parsed.with_path("/chunked")) if parsed.path in ("", "/") else url


class BodyWriter:
    """Writes the first head seen, then each record with the format's separator, then the closing."""

    def __init__(self, fmt: str, sink: BinaryIO) -> None:
        self._sink = sink
        self._separator = SEPARATORS[fmt]
        self._closing = CLOSINGS[fmt]
        # JSON puts its separator between records, the others after each one.
        self._separator_first = fmt == "json"
        self._head_written = False
        self._records = 0
        self.bytes_written = 0

    def write(self, batch: Batch) -> None:
        if not self._head_written and batch.head is not None:
            self._write(batch.head)
            self._head_written = True
        if not batch.records:
            return
        body = self._separator.join(batch.records)
        if self._separator_first:
            self._write(self._separator + body if self._records else body)
        else:
            self._write(body + self._separator)
        self._records += len(batch.records)

    def finish(self) -> None:
        if not self._head_written:
            raise BodyError("no response reached its first record or header")
        self._write(self._closing)

    def _write(self, data: bytes) -> None:
        self._sink.write(data)
        self.bytes_written += len(data)


class ProgressLine:
    """rows, MB, rows/s on one line of a terminal, redrawn at most ten times a second."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._started = time.perf_counter()
        self._shown_at = 0.0
        self.rows = 0
        self.bytes = 0

    def update(self, rows: int, nbytes: int) -> None:
        self.rows, self.bytes = rows, nbytes
        now = time.perf_counter()
        if now - self._shown_at >= 0.1:
            self._shown_at = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        rate = self.rows / max(now - self._started, 1e-9)
        self._stream.write(f"\r  {self.rows:>11,} rows  {self.bytes / 1e6:>8.1f} MB  {rate:>10,.0f} rows/s ")
        self._stream.flush()

    def interrupt(self) -> None:
        """End the line so a message can follow."""
        self._stream.write("\n")
        self._stream.flush()

    def done(self) -> None:
        self._draw(time.perf_counter())
        self._stream.write("\n")
        self._stream.flush()


@dataclass(frozen=True)
class FetchResult:
    rows: int
    bytes: int
    seconds: float
    retries: int


@contextlib.contextmanager
def _output(out: Path | None) -> Iterator[BinaryIO]:
    """stdout, or a temporary file beside `out` that replaces `out` only if the block completes."""
    if out is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = out.resolve()
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    # 0o666 less the umask, as for any new file (mkstemp would make it 0600).
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as sink:
            yield sink
            sink.flush()
            os.fsync(sink.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


async def download(
    url: str,
    token: str,
    fmt: str,
    out: Path | None,
    *,
    limit: int | None = None,
    after_id: int = 0,
    page_size: int | None = None,
    retries: int = 5,
    backoff: float = 0.5,
    messages: TextIO | None = None,
) -> FetchResult:
    """Download to `out` (or stdout); raises the client's errors, leaving no file behind on failure.

    Retries and, on a terminal, a progress line go to `messages` (default: stderr).
    """
    messages = sys.stderr if messages is None else messages
    progress = ProgressLine(messages) if messages.isatty() else None
    retried = 0

    def on_retry(event: Retry) -> None:
        nonlocal retried
        retried += 1
        if progress is not None:
            progress.interrupt()
        print(f"fetch: {event}", file=messages, flush=True)

    started = time.perf_counter()
    rows = 0
    with _output(out) as sink:
        writer = BodyWriter(fmt, sink)
        async for batch in stream_batches(
            url,
            token,
            fmt,
            after_id,
            limit=limit,
            page_size=page_size,
            retries=retries,
            backoff=backoff,
            on_retry=on_retry,
        ):
            writer.write(batch)
            rows += len(batch.rows)
            if progress is not None:
                progress.update(rows, writer.bytes_written)
        writer.finish()
    if progress is not None:
        progress.done()
    return FetchResult(rows, writer.bytes_written, time.perf_counter() - started, retried)


def run_fetch(settings: Settings, args: argparse.Namespace) -> int:
    """The `fetch` subcommand: its exit code (see EXIT_CODES_HELP)."""
    try:
        url = endpoint_url(args.url) if args.url else default_url(settings)
        token = args.token or mint_token(load_keys(settings), subject="fetch", ttl=settings.token_ttl)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"fetch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.out is not None and not args.out.resolve().parent.is_dir():
        print(f"fetch: no such directory for --out: {args.out.resolve().parent}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = asyncio.run(
            download(
                url,
                token,
                args.format,
                args.out,
                limit=args.limit,
                after_id=args.after_id,
                page_size=args.page_size,
                retries=args.retries,
            )
        )
    except Unauthorized as exc:
        print(f"fetch: {exc}", file=sys.stderr)
        return EXIT_UNAUTHORIZED
    except RequestRejected as exc:
        print(f"fetch: {exc}", file=sys.stderr)
        return EXIT_REJECTED
    except GaveUp as exc:
        print(f"fetch: {exc}", file=sys.stderr)
        return EXIT_GAVE_UP
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
