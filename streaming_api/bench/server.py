"""The server the bench owns: `run.py serve` in a process of its own, on a free port, with the bench's data dir.

The server runs as a separate process (its RSS is measurable, and the client does not share its event
loop). Its data directory is the bench's own (default <data_dir>/bench), so a server the user already
runs on the default one is not disturbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, TYPE_CHECKING

import psutil

from ..settings import PROJECT_ROOT
from .wire import Target, fetch

if TYPE_CHECKING:
    from .plan import Group

START_TIMEOUT_SECONDS = 120.0
STOP_TIMEOUT_SECONDS = 60.0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def server_environment(
    data_path: Path, port: int, guards: Mapping[str, object], host: str = "127.0.0.1"
) -> dict[str, str]:
    """The subprocess's environment: this bench's data dir and address, always the embedded database.
    `host` is 127.0.0.1, or the bench's end of a link's veth pair (bench.link): never a public address."""
    env = dict(os.environ)
    values: dict[str, object] = {
        "data_dir": str(data_path),
        # Empty means none: the bench never seeds (truncates) a table it does not own.
        "database_url": "",
        "host": host,
        "port": port,
        # The bench seeds its table itself before the server starts: the server seeds nothing.
        "rows": 0,
        "metrics_enabled": "true",
        **guards,
    }
    for name, value in values.items():
        text = ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)
        env[f"STREAMING_API_{name.upper()}"] = text
    return env


def process_tree(pid: int) -> list[psutil.Process]:
    """A process and its descendants (a server and its workers, PostgreSQL and its backends); psutil.Error
    when the process is gone. Listing them walks every process on the machine: not a thing to repeat often."""
    root = psutil.Process(pid)
    return [root, *root.children(recursive=True)]


def rss_sum(processes: list[psutil.Process]) -> int | None:
    """Their resident memory together, in bytes (those gone meanwhile left out); None if all are gone."""
    total = 0
    for process in processes:
        with contextlib.suppress(psutil.Error):
            total += process.memory_info().rss
    return total or None


def tree_rss(pid: int) -> int | None:
    """The resident memory of a process and its descendants, in bytes."""
    try:
        return rss_sum(process_tree(pid))
    except psutil.Error:
        return None


def _open_log(path: Path) -> IO[bytes]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("ab")


class ServerProcess:
    """`python run.py serve` on a free port, until stop()."""

    def __init__(self, env: Mapping[str, str], port: int, log_path: Path, host: str = "127.0.0.1") -> None:
        self.env = dict(env)
        self.host = host
        self.port = port
        self.log_path = log_path
        self.process: asyncio.subprocess.Process | None = None
        # RSS once it answers /healthz and has made one one-row export of the group's format (see prime):
        # the baseline of every memory figure.
        self.fresh_rss: int | None = None
        # What that first one-row export added: what the format loads once per process (pyarrow for Arrow).
        self.format_load_rss: int | None = None

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
        target = Target("http", self.host, self.port, "", token)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if self.process.returncode is not None:
                raise RuntimeError(
                    f"the server exited with status {self.process.returncode} while starting; see {self.log_path}"
                )
            response = await fetch(target, "/healthz", within_seconds=5.0)
            if response.error is None and response.pieces and response.pieces[0].startswith(b"HTTP/1.1 200"):
                self.fresh_rss = tree_rss(self.pid)
                return target
            if time.monotonic() > deadline:
                await self.stop()
                raise RuntimeError(f"the server did not answer /healthz within {START_TIMEOUT_SECONDS:g} s")
            # Polling a condition with a deadline: the server is importing, connecting, binding.
            await asyncio.sleep(0.05)

    async def prime(self, target: Target, spec: Group, workers: int) -> None:
        """One-row exports of the group's format before anything is measured, so that what a format loads once
        per process (pyarrow and numpy for Arrow: about 90 MB) is not counted as a request's memory. Its
        size is kept apart (format_load_rss). Several, so that each worker most likely serves one."""
        assert self.fresh_rss is not None
        before = self.fresh_rss
        for _ in range(4 * workers):
            await fetch(target, spec.path(limit=1), within_seconds=30.0)
        self.fresh_rss = tree_rss(self.pid)
        self.format_load_rss = max(self.fresh_rss - before, 0)

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
