"""The server the bench owns: its embedded PostgreSQL, the `run.py serve` subprocess, and what it costs.

The server runs as a separate process (its RSS is measurable, and the client does not share its event
loop). Its data directory is the bench's own (default <data_dir>/bench), so a server the user already
runs on the default one is not disturbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import IO

import asyncpg
import psutil

from ..config import PROJECT_ROOT, Settings
from ..db import row_count, seed
from ..embedded import EmbeddedPostgres
from .client import Target, fetch

log = logging.getLogger(__name__)

RSS_INTERVAL_SECONDS = 0.010
START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 60.0


class BenchDatabase:
    """The bench's embedded PostgreSQL, shared with the server subprocess (it stops when both let go)."""

    def __init__(self, data_path: Path) -> None:
        self.data_path = data_path
        self._embedded = EmbeddedPostgres(data_path)
        self.url: str | None = None

    async def start(self) -> str:
        self.url = await asyncio.to_thread(self._embedded.start)
        return self.url

    async def stop(self) -> None:
        await asyncio.to_thread(self._embedded.stop)

    async def ensure_rows(
        self, conn: asyncpg.Connection, rows: int, progress: Callable[[int, int], None] | None
    ) -> bool:
        """Make the points table hold rows 1..rows; True when it had to be (re)seeded."""
        if await row_count(conn) == rows:
            return False
        await seed(conn, rows, None if progress is None else (lambda done: progress(done, rows)))
        return True

    def postmaster_pid(self) -> int | None:
        try:
            return int((self._embedded.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def server_environment(
    settings: Settings, data_path: Path, port: int, rows: int, guards: Mapping[str, object]
) -> dict[str, str]:
    """The subprocess's environment: this bench's data dir, port and size, always the embedded database."""
    env = dict(os.environ)
    known = {f.name for f in fields(Settings)}
    values: dict[str, object] = {
        "data_dir": str(data_path),
        # Empty means none: the bench never seeds (truncates) a table it does not own.
        "database_url": "",
        "host": "127.0.0.1",
        "port": port,
        "rows": rows,
        "metrics_enabled": "true",
        **guards,
    }
    for name, value in values.items():
        if name in known:
            env[f"STREAMING_API_{name.upper()}"] = str(value)
    return env


def _open_log(path: Path) -> IO[bytes]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("ab")


class ServerProcess:
    """`python run.py serve` on a free port, until stop()."""

    def __init__(self, env: Mapping[str, str], port: int, log_path: Path) -> None:
        self.env = dict(env)
        self.port = port
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        # RSS once it answers /healthz, before its first export: the baseline of every memory figure.
        self.fresh_rss: int | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self, token: str) -> Target:
        log_file = _open_log(self.log_path)
        try:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                str(PROJECT_ROOT / "run.py"),
                "serve",
                env=self.env,
                cwd=str(PROJECT_ROOT),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
            )
        finally:
            log_file.close()
        target = Target("http", "127.0.0.1", self.port, "", token)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if self.process.returncode is not None:
                raise RuntimeError(
                    f"the server exited with status {self.process.returncode} while starting; see {self.log_path}"
                )
            response = await fetch(target, "/healthz", within_seconds=5.0)
            if response.error is None and response.pieces and response.pieces[0].startswith(b"HTTP/1.1 200"):
                with contextlib.suppress(psutil.Error):
                    self.fresh_rss = psutil.Process(self.pid).memory_info().rss
                return target
            if time.monotonic() > deadline:
                await self.stop()
                raise RuntimeError(f"the server did not answer /healthz within {START_TIMEOUT_SECONDS:g} s")
            # Polling a condition with a deadline: the server is importing, connecting, binding.
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        # SIGTERM: the server shuts down cleanly and lets go of the embedded database.
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), STOP_TIMEOUT_SECONDS)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


class CpuMeter:
    """CPU seconds used by a process, optionally with all its descendants (PostgreSQL's backends)."""

    def __init__(self, pid: int, descendants: bool = False) -> None:
        self.pid = pid
        self.descendants = descendants

    def snapshot(self) -> dict[int, float]:
        try:
            root = psutil.Process(self.pid)
            processes = [root, *(root.children(recursive=True) if self.descendants else [])]
        except psutil.Error:
            return {}
        seconds = {}
        for process in processes:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            seconds[process.pid] = times.user + times.system
        return seconds

    @staticmethod
    def used(before: Mapping[int, float], after: Mapping[int, float]) -> float:
        return round(sum(after[pid] - before.get(pid, 0.0) for pid in after), 4)


def _hwm_bytes(pid: int) -> int | None:
    """The kernel's peak RSS of the process since its last reset (Linux VmHWM)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_hwm(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


@dataclass
class RssFigures:
    idle: int | None
    peak_sampled: int | None
    # The kernel's own high-water mark over the run, when the platform has one: misses no short peak.
    peak_hwm: int | None
    samples: list[tuple[float, int]] = field(default_factory=list)
    interval_s: float = RSS_INTERVAL_SECONDS
    source: str = "psutil"

    @property
    def peak(self) -> int | None:
        peaks = [p for p in (self.peak_sampled, self.peak_hwm) if p is not None]
        return max(peaks) if peaks else None

    @property
    def growth(self) -> int | None:
        return None if self.idle is None or self.peak is None else max(self.peak - self.idle, 0)


class RssSampler:
    """Samples a local process's RSS every 10 ms on a thread of its own (the event loop cannot delay it)."""

    def __init__(self, pid: int, interval: float = RSS_INTERVAL_SECONDS) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self._halt = threading.Event()
        self._samples: list[tuple[float, int]] = []
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._idle: int | None = None
        self._hwm_reset = False

    def _rss(self) -> int | None:
        try:
            return self.process.memory_info().rss
        except psutil.Error:
            return None

    def start(self) -> None:
        self._idle = self._rss()
        self._hwm_reset = _reset_hwm(self.process.pid)
        self._thread.start()

    def _run(self) -> None:
        next_at = time.perf_counter()
        while not self._halt.is_set():
            rss = self._rss()
            if rss is not None:
                self._samples.append((time.perf_counter(), rss))
            next_at += self.interval
            self._halt.wait(max(next_at - time.perf_counter(), 0.0))

    def stop(self) -> RssFigures:
        self._halt.set()
        self._thread.join()
        hwm = _hwm_bytes(self.process.pid) if self._hwm_reset else None
        peak = max((rss for _, rss in self._samples), default=None)
        return RssFigures(self._idle, peak, hwm, self._samples)
