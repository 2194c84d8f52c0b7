"""The embedded PostgreSQL's watchdog: stops the server once no owner is left, however the owners ended.

    python -m streaming_api.db.embedded_watchdog PGDATA

EmbeddedPostgres.start() runs it (one per data directory, in a session of its own) before it starts the
server. It sleeps in flock(owners.lock, LOCK_EX): the kernel wakes it the moment the last owner's shared
lock goes, whether that owner called stop() or was killed. It then takes start.lock (so nobody can join),
checks again that no owner is left (one may have joined in between: then it goes back to sleep), stops
the server and exits. It ignores SIGHUP and SIGINT; SIGTERM ends it, and the next owner starts another.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import sys
import time
from pathlib import Path

from .postmaster import RunFiles, open_lock, stop_server, try_exclusive


def _say(text: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} watchdog {os.getpid()}: {text}", flush=True)


def watch(pgdata: Path) -> int:
    files = RunFiles(pgdata)
    me = open_lock(files.watchdog)
    if not try_exclusive(me):
        return 0  # another watchdog is on duty
    owners, start = open_lock(files.owners), open_lock(files.start)
    _say(f"on duty for {pgdata}")
    while True:
        fcntl.flock(owners, fcntl.LOCK_EX)  # sleeps in the kernel until no owner holds its shared lock
        fcntl.flock(owners, fcntl.LOCK_UN)
        fcntl.flock(start, fcntl.LOCK_EX)
        if try_exclusive(owners):  # still no owner, and none can join while we hold start.lock
            break
        fcntl.flock(start, fcntl.LOCK_UN)
    _say(f"no owner left: {stop_server(pgdata)}; exiting")
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m streaming_api.db.embedded_watchdog PGDATA", file=sys.stderr)
        return 2
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return watch(Path(argv[0]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
