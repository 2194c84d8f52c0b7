"""`python run.py serve` in a process of its own (signals, exit codes, its own memory), and what /proc says."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from streaming_api.settings import PROJECT_ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _limit_open_files(open_files: int | tuple[int, int | None]) -> Callable[[], None]:
    soft, hard = (open_files, open_files) if isinstance(open_files, int) else open_files

    def limit() -> None:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1] if hard is None else hard)
        )

    return limit


@dataclass
class ServerProcess:
    """`python run.py serve` in a subprocess: for signals, exit codes and the server's own memory."""

    port: int
    process: subprocess.Popen
    log_path: Path
    environment: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(
        cls,
        tmp_path: Path,
        settings: dict[str, object],
        open_files: int | tuple[int, int | None] | None = None,
        environment: dict[str, str] | None = None,
    ) -> ServerProcess:
        """Start `run.py serve`; open_files sets its open-file limit: n (soft and hard), or (soft, hard or None
        for the current hard one); environment adds variables besides the settings (TMPDIR, say)."""
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMING_API_") and k != "DATABASE_URL"}
        env.update(environment or {})
        for name, value in settings.items():
            env[f"STREAMING_API_{name.upper()}"] = ",".join(value) if isinstance(value, tuple) else str(value)
        log_path = tmp_path / f"server-{port}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "run.py", "serve", "--port", str(port)],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                preexec_fn=None if open_files is None else _limit_open_files(open_files),
            )
        return cls(port, process, log_path, env)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_ready(self, within: float) -> None:
        """Poll /healthz until it answers 200 (the embedded database may be initialised and seeded first)."""
        deadline = time.monotonic() + within
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log}")
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                reader = None
            if reader is not None:
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                status_line = await reader.readline()
                writer.close()
                if b" 200 " in status_line:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(f"server not ready within {within:g} s:\n{self.log}")
            await asyncio.sleep(0.1)

    def _status_kb(self, field_name: str) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
        raise AssertionError(f"{field_name} not in /proc/{self.process.pid}/status")

    def open_files_limit(self) -> int:
        """The process's soft open-file limit, as the kernel has it."""
        limits = Path(f"/proc/{self.process.pid}/limits").read_text()
        line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
        return int(line.split()[3])

    def rss_mb(self) -> float:
        return self._status_kb("VmRSS") / 1024

    def peak_rss_mb(self) -> float:
        """Peak resident memory since start or since the last reset_peak_rss()."""
        return self._status_kb("VmHWM") / 1024

    def reset_peak_rss(self) -> None:
        # Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS.
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def terminate(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def stop(self, within: float = 60) -> None:
        if self.process.poll() is None:
            self.terminate()
            try:
                self.process.wait(within)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def communicate_within(process: asyncio.subprocess.Process, within: float) -> tuple[bytes, bytes]:
    """Its stdout and stderr once it exits; killed (and the test failed by the timeout) if it has not within
    `within` seconds."""
    try:
        async with asyncio.timeout(within):
            return await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def listening_addresses(port: int) -> list[str]:
    """IPv4/IPv6 addresses with a socket listening on `port` (from /proc/net/tcp*)."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(port_hex, 16) == port:
                found.append(_decode_address(address))
    return found


def _decode_address(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    # /proc/net/tcp writes each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return socket.inet_ntop(socket.AF_INET if len(words) == 4 else socket.AF_INET6, words)


def processes_mentioning(text: str) -> list[int]:
    """Pids of running processes whose command line contains text (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if text.encode() in cmdline:
                found.append(int(entry.name))
    return found
