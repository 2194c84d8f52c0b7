"""The directory `serve --workers` keeps its workers' figures in (prometheus_client's multiprocess mode), and
how it never outlives them.

Every process that uses it (the supervisor and each worker) holds a shared flock(2) on its `in-use` file for
as long as it does; the kernel drops that lock however the process ends (kill -9 included), so "nobody uses
it" is exactly "an exclusive lock can be taken". The last one out removes it; the next supervisor to start
removes any that every user left without removing (all killed at once). A directory whose lock is held, or
that has no lock file, is never touched: only the provably abandoned go.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from pathlib import Path

PREFIX = "streaming_api-metrics-"
IN_USE = "in-use"


def make() -> tuple[Path, int]:
    """A new directory, already held by this process (the descriptor of its hold), and stale ones removed.

    Made under a hidden name and renamed once held, so a sweep by another server starting at the same
    moment never finds it unheld."""
    sweep()
    making = Path(tempfile.mkdtemp(prefix="." + PREFIX))
    held = hold(making)
    directory = making.with_name(making.name[1:])
    making.rename(directory)
    return directory, held


def hold(directory: Path) -> int:
    """Hold the directory (a shared lock) until let_go() or this process's end; the lock's descriptor."""
    fd = os.open(directory / IN_USE, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    return fd


def let_go(directory: Path, held: int) -> bool:
    """Let go of the directory; remove it when no other process holds it. True when it was removed."""
    os.close(held)
    return _remove_if_abandoned(directory)


def sweep() -> list[Path]:
    """Remove the directories every user has left (killed before they could remove it); those removed."""
    return [d for d in Path(tempfile.gettempdir()).glob(PREFIX + "*") if _remove_if_abandoned(d)]


def _remove_if_abandoned(directory: Path) -> bool:
    try:
        fd = os.open(directory / IN_USE, os.O_RDWR)
    except OSError:
        return False  # no lock file: not provably abandoned (or already gone)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False  # someone still holds it
    else:
        shutil.rmtree(directory, ignore_errors=True)
        return True
    finally:
        os.close(fd)
