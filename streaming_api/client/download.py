"""Download an export to a file (or stdout), resuming after drops: whole or nothing (`run.py fetch`'s engine).

The file holds the server's own bytes, never parsed (client.raw): the first response's head (CSV's
header, JSON's "["), then every record exactly as received. A download that resumed is byte for byte
the one that did not.

arrow: one IPC stream, the first response's schema message, every record batch's message as received,
the end-of-stream marker: read back, the uninterrupted download's table (its batches may be cut
differently). parquet: that stream written as a Parquet file in row groups (client/parquet.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import stat
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from .errors import Retry, RowCount, SnapshotGone
from .raw import Block, RawWriter, raw_blocks
from .records import FORMATS
from .stream import ARROW, load_arrow

if TYPE_CHECKING:
    from .arrow import Message

PARQUET = "parquet"
# What fetch can write: the server's text formats as they are, its Arrow stream, and Parquet made from it.
FETCH_FORMATS = (*FORMATS, ARROW, PARQUET)

# How often to look again for a reader of a FIFO given as the output (no event says one came).
FIFO_READER_POLL_SECONDS = 0.1


class _Writer(Protocol):
    bytes_written: int

    def write(self, item: Any) -> None: ...

    def finish(self) -> None: ...


@dataclass(frozen=True)
class FetchResult:
    rows: int
    bytes: int
    seconds: float
    retries: int


class OutputError(OSError):
    """The output could not be written (a full disk, a reader that went away): says which output and why."""

    def __init__(self, where: str, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.where = where

    def __str__(self) -> str:
        return f"cannot write {self.where}: {self.strerror}"


@contextlib.contextmanager
def _writing(where: str) -> Iterator[None]:
    """An OSError in the block is the output's: an OutputError naming it."""
    try:
        yield
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(where, exc) from exc


@contextlib.contextmanager
def _closed_quietly(sink: BinaryIO) -> Iterator[BinaryIO]:
    """Closed however the block ends; a close that fails only repeats a write error already raised (what the
    buffer still held), so it must not replace that error."""
    try:
        yield sink
    finally:
        with contextlib.suppress(OSError):
            sink.close()


def written_in_place(out: Path | None) -> bool:
    """Whether `out` is written into as the bytes come (stdout, a device, a FIFO) rather than replaced whole
    (a regular file, or a new path)."""
    try:
        return out is None or (not stat.S_ISREG(mode := os.stat(out).st_mode) and not stat.S_ISDIR(mode))
    except FileNotFoundError:
        return False


async def _open_in_place(out: Path) -> int:
    """A device or a FIFO opened for writing, as the shell's > opens it. A FIFO opens once something reads
    it: waited for without blocking the loop, so Ctrl+C still ends the wait."""
    while True:
        try:
            fd = os.open(out, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            # ENXIO: a FIFO with no reader yet (a socket, say, would never open: it fails at once).
            if exc.errno != errno.ENXIO or not stat.S_ISFIFO(os.stat(out).st_mode):
                raise
            await asyncio.sleep(FIFO_READER_POLL_SECONDS)
        else:
            os.set_blocking(fd, True)
            return fd


@contextlib.asynccontextmanager
async def _output(out: Path | None, where: str) -> AsyncIterator[BinaryIO]:
    """stdout, a device or a FIFO, written into as the bytes come; else a temporary file beside `out`."""
    if out is None:
        yield sys.stdout.buffer
        with _writing(where):
            sys.stdout.buffer.flush()
    elif written_in_place(out):
        with _writing(where):
            fd = await _open_in_place(out)
        with _closed_quietly(os.fdopen(fd, "wb")) as sink:
            yield sink
            with _writing(where):
                sink.flush()
    else:
        with _replaced_whole(out, where) as sink:
            yield sink


@contextlib.contextmanager
def _replaced_whole(out: Path, where: str) -> Iterator[BinaryIO]:
    """A temporary file beside `out` that replaces `out` only if the block completes."""
    target = out.resolve()
    temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.part")
    # 0o666 less the umask, as for any new file (mkstemp would make it 0600).
    with _writing(where):
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with _closed_quietly(os.fdopen(fd, "wb")) as sink:
            yield sink
            with _writing(where):
                sink.flush()
                os.fsync(sink.fileno())
        with _writing(where):
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
    after_id: int | None = None,
    after: Any = None,
    page_size: int | None = None,
    columns: Sequence[str] | str | None = None,
    retries: int = 5,
    backoff: float = 0.5,
    on_retry: Callable[[Retry], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_count: Callable[[RowCount], None] | None = None,
    compressed: bool = True,
) -> FetchResult:
    """Download to `out` (or stdout; parquet needs a file); raises the client's errors, and OutputError when
    the output cannot be written. A regular file is replaced only when complete (a failure leaves none
    behind); stdout, a device or a FIFO is written into as the bytes come.

    on_retry is told of each retry before the wait; on_progress(rows, bytes written) after each batch;
    on_count what each response announces (see stream_rows).
    """
    if fmt not in FETCH_FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FETCH_FORMATS)}")
    if fmt == PARQUET and out is None:
        raise ValueError("a Parquet file needs a file to write to (--out), not stdout")
    retried = 0

    def retrying(event: Retry) -> None:
        nonlocal retried
        retried += 1
        if on_retry is not None:
            on_retry(event)

    options: dict[str, Any] = {
        "after": after,
        "limit": limit,
        "page_size": page_size,
        "columns": columns,
        "retries": retries,
        "backoff": backoff,
        "on_retry": retrying,
        "on_count": on_count,
        "compressed": compressed,
    }
    started = time.perf_counter()
    where = "stdout" if out is None else str(out)
    in_place = written_in_place(out)
    restarts = 0
    async with _output(out, where) as sink:
        while True:
            writer, items = _source(url, token, fmt, after_id, options, sink)
            rows = 0
            try:
                async with aclosing(items):
                    async for item in items:
                        with _writing(where):
                            writer.write(item)
                        rows += _rows(item)
                        if on_progress is not None:
                            on_progress(rows, writer.bytes_written)
            except SnapshotGone as exc:
                # What was written read another moment than the rest would: into a file replaced whole, start
                # again (a new snapshot); written in place, nothing can be taken back.
                restarts += 1
                if in_place or restarts > retries:
                    raise
                reason = f"the export's snapshot is gone ({exc.error}): the {rows:,} rows so far are thrown away"
                retrying(Retry(restarts, retries, 0.0, reason, 0, None))
                with _writing(where):
                    sink.seek(0)
                    sink.truncate()
                continue
            with _writing(where):
                writer.finish()
            return FetchResult(rows, writer.bytes_written, time.perf_counter() - started, retried)


def _source(
    url: str, token: str, fmt: str, after_id: int | None, options: dict[str, Any], sink: BinaryIO
) -> tuple[_Writer, AsyncIterator[Any]]:
    """The writer for the format, and what it writes: text batches, or Arrow messages (pyarrow loaded here)."""
    if fmt in FORMATS:
        return RawWriter(fmt, sink), raw_blocks(url, token, fmt, after_id, **options)
    arrow = load_arrow()
    messages = arrow.arrow_messages(url, token, after_id, **options)
    if fmt == ARROW:
        return arrow.ArrowStreamWriter(sink), messages
    from .parquet import ParquetFileWriter

    return ParquetFileWriter(sink), messages


def _rows(item: Block | Message) -> int:
    if isinstance(item, Block):
        return item.rows
    return 0 if item.batch is None else item.batch.num_rows
