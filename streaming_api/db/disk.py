"""A disk that fills while the table is seeded: how that shows, and the one line that says where, what was
left behind and how to retry.

PostgreSQL says so in two ways: an ERROR 53100 (a table file it cannot extend), or, when it cannot write its
WAL, a PANIC that ends every connection (and a crash recovery that fails for the same reason, which stops
the server). The client then sees only a lost connection; the embedded server's log has the cause.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import asyncpg

from .embedded import EmbeddedPostgres

# PostgreSQL's own words (strerror(ENOSPC)) in its log.
NO_SPACE = "No space left on device"
# Measured: a data directory seeded with 500,000 rows takes 155 MB, 40 MB of it the empty database.
EMPTY_DATABASE_BYTES = 40_000_000
BYTES_PER_ROW = 230


class NoSpace(Exception):
    """The database's disk filled while seeding; the message is the line for the user."""


def log_position(embedded: EmbeddedPostgres | None) -> int:
    """Where the embedded server's log ends now: what it writes from here on is this seeding's."""
    try:
        return (embedded.pgdata / "log").stat().st_size if embedded else 0
    except OSError:
        return 0


def ran_out(exc: BaseException, embedded: EmbeddedPostgres | None, since: int) -> bool:
    """Whether `exc`, raised while seeding, came of a full disk (the server's error, or its log since `since`)."""
    if isinstance(exc, asyncpg.DiskFullError):
        return True
    if embedded is None:
        return False
    try:
        with (embedded.pgdata / "log").open("rb") as log:  # pg_ctl -l (db/embedded.py)
            log.seek(since)
            return NO_SPACE.encode() in log.read()
    except OSError:
        return False


def no_space(rows: int, embedded: EmbeddedPostgres | None, exc: BaseException, table: str = "points") -> NoSpace:
    """The one line: where, what was left behind (the load is one transaction: none of it), how to retry."""
    kept = f"the {table} table is as it was (the load is one transaction: none of it was kept)"
    if embedded is None:
        return NoSpace(
            f"no space left on the database server's disk while seeding {rows:,} rows ({_first_line(exc)}); {kept}: "
            "free space there, then run the command again"
        )
    pgdata = embedded.pgdata
    free = shutil.disk_usage(pgdata).free
    needed = EMPTY_DATABASE_BYTES + rows * BYTES_PER_ROW
    return NoSpace(
        f"no space left on {_mount_point(pgdata)} while seeding {rows:,} rows into the embedded PostgreSQL in "
        f"{pgdata}: {kept}; {free / 1e6:,.0f} MB free there, and {rows:,} rows take about {needed / 1e6:,.0f} MB in "
        f"all: free space, or set DATA_DIR to a larger disk (or delete {pgdata} to start afresh), then run the "
        "command again"
    )


def _mount_point(path: Path) -> Path:
    while not os.path.ismount(path) and path.parent != path:
        path = path.parent
    return path


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
