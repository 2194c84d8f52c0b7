"""Helpers for the reliability tests: a bigger table, raw sockets, bounded waits, body checks, a server process."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
from aiohttp import web

from streaming_api.app import create_app
from streaming_api.config import PROJECT_ROOT, Settings
from streaming_api.db import POOL, row_count, seed
from streaming_api.shutdown import IN_FLIGHT

# Big enough that a stream cannot fit in the socket buffers (about 14 MB of ndjson), so a client that
# stops reading really does hold its stream mid-way.
BIG_ROWS = 100_000
BIG_DATABASE = "streaming_api_reliability"


# --- the bigger table ------------------------------------------------------------------------------


def _with_database(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


async def _ensure_big_database(url: str) -> str:
    """A second database on the session's server whose points table holds BIG_ROWS rows (made once)."""
    conn = await asyncpg.connect(url)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", BIG_DATABASE)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{BIG_DATABASE}"')
    finally:
        await conn.close()
    big_url = _with_database(url, BIG_DATABASE)
    conn = await asyncpg.connect(big_url)
    try:
        if await row_count(conn) != BIG_ROWS:
            await seed(conn, BIG_ROWS)
    finally:
        await conn.close()
    return big_url


def big_database_url(session_url: str) -> str:
    return asyncio.run(_ensure_big_database(session_url))


# --- waiting ------------------------------------------------------------------------------------


async def wait_until(condition: Callable[[], bool], within: float, what: str) -> None:
    """Poll condition until it holds; fail naming `what` if it does not within `within` seconds."""
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within:g} s: {what}")
        await asyncio.sleep(0.01)


def busy_connections(pool: asyncpg.Pool) -> int:
    """Pool connections currently handed out (0 when every open connection is back in the pool)."""
    return pool.get_size() - pool.get_idle_size()


async def connections_back(server: Running, within: float = 1.0) -> None:
    """Every connection is back in the pool within a second (a cancelled query's release finishes a moment
    after its task, under asyncpg's shield)."""
    await wait_until(lambda: busy_connections(server.pool) == 0, within, "every connection is back in the pool")


# --- raw HTTP over a socket --------------------------------------------------------------------------


class RawClient:
    """One HTTP/1.1 request over a plain socket whose reads the test controls (a slow or vanishing client)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.loop = asyncio.get_running_loop()
        self.status = 0
        self.headers: dict[str, str] = {}
        self.decoder = ChunkedDecoder()

    @classmethod
    async def get(
        cls, port: int, path: str, headers: dict[str, str] | None = None, receive_buffer: int | None = 4096
    ) -> RawClient:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            # Before connect, so the advertised window stays small: the server's writes really block.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, ("127.0.0.1", port))
        lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        await loop.sock_sendall(sock, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        client = cls(sock)
        await client._read_head()
        return client

    async def _recv(self, size: int) -> bytes:
        try:
            return await self.loop.sock_recv(self.sock, size)
        except ConnectionError:
            return b""

    async def _read_head(self) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            more = await self._recv(4096)
            if not more:
                raise AssertionError(f"connection closed before the response head: {data!r}")
            data += more
        head, _, rest = data.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        self.status = int(status_line.split()[1])
        for line in header_lines:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.decoder.feed(rest)

    async def read_some(self, size: int = 65536) -> bool:
        """Read what is there (up to size bytes); False once the server closed the connection."""
        data = await self._recv(size)
        if not data:
            return False
        self.decoder.feed(data)
        return True

    async def read_until(self, condition: Callable[[ChunkedDecoder], bool], within: float) -> None:
        async with asyncio.timeout(within):
            while not condition(self.decoder):
                if not await self.read_some():
                    return

    async def read_to_end(self, within: float) -> None:
        """Read until the server ends the connection or the last chunk arrives, within a bound."""
        async with asyncio.timeout(within):
            while not self.decoder.complete and await self.read_some():
                pass

    async def read_slowly(self, bytes_per_second: int, stop: asyncio.Event, step: int = 1024) -> None:
        """Read at about bytes_per_second until stop is set or the server closes the connection."""
        while not stop.is_set() and not self.decoder.complete:
            if not await self.read_some(step):
                return
            await asyncio.sleep(step / bytes_per_second)

    def close(self) -> None:
        self.sock.close()


class ChunkedDecoder:
    """Incremental Transfer-Encoding: chunked decoder; `complete` only once the terminating chunk came."""

    def __init__(self) -> None:
        self.buffer = b""
        self.body = bytearray()
        self.chunks = 0
        self.complete = False
        # Bytes received after the head, whole chunks or not.
        self.received = 0

    def feed(self, data: bytes) -> None:
        self.received += len(data)
        self.buffer += data
        while not self.complete:
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                return
            size = int(self.buffer[:line_end].split(b";")[0], 16)
            if size == 0:
                if self.buffer[line_end + 2 : line_end + 4] == b"\r\n":
                    self.complete = True
                    self.buffer = b""
                return
            end = line_end + 2 + size
            if len(self.buffer) < end + 2:
                return
            self.body += self.buffer[line_end + 2 : end]
            self.chunks += 1
            self.buffer = self.buffer[end + 2 :]


# --- bodies ----------------------------------------------------------------------------------------

# Every row starts with its id: `{"id":N,` in ndjson and json, `N,` at the start of a csv/text line.
_JSON_IDS = re.compile(rb'\{"id":(\d+),')
_CSV_IDS = re.compile(rb"^(\d+),", re.MULTILINE)
CSV_HEADER = b"id,x,y,label,value,recorded_at\n"


def row_ids(fmt: str, data: bytes) -> list[int]:
    """The ids of the rows in a body or a part of one, without checking its framing."""
    if fmt in ("ndjson", "json"):
        return [int(i) for i in _JSON_IDS.findall(data)]
    return [int(i) for i in _CSV_IDS.findall(data, len(CSV_HEADER))] if data.startswith(CSV_HEADER) else []


def body_ids(fmt: str, body: bytes) -> list[int]:
    """The ids of a whole body, after checking its framing; cheap enough for the load test."""
    if fmt == "ndjson":
        assert body == b"" or body.endswith(b"\n"), "ndjson must end with a newline"
        ids = _JSON_IDS.findall(body)
        assert len(ids) == body.count(b"\n"), "one row per line"
    elif fmt == "json":
        assert body.startswith(b"[") and body.endswith(b"]\n"), "json must be one array"
        ids = _JSON_IDS.findall(body)
        assert len(ids) == body.count(b",\n") + (1 if ids else 0), "rows separated by ,\\n"
    else:
        assert body.startswith(CSV_HEADER), "csv starts with its header"
        assert body == CSV_HEADER or body.endswith(b"\n")
        ids = _CSV_IDS.findall(body, len(CSV_HEADER))
    return [int(i) for i in ids]


def assert_rows(fmt: str, body: bytes, after_id: int, count: int) -> None:
    """The body holds exactly rows after_id+1 .. after_id+count, in order."""
    ids = body_ids(fmt, body)
    assert len(ids) == count, f"{len(ids)} rows, expected {count}"
    assert ids == list(range(after_id + 1, after_id + 1 + count)), "ids must run on without gaps or repeats"


def complete_rows(fmt: str, partial: bytes) -> bytes:
    """The prefix of a cut-off body that holds only whole rows (what a client can keep and resume after)."""
    if fmt == "json":
        # Rows are separated by ",\n" and hold no raw newline (JSON escapes it).
        end = partial.rfind(b",\n")
        return partial[: end + 2] if end >= 0 else partial[:1]
    if fmt == "ndjson":
        return partial[: partial.rfind(b"\n") + 1]
    # csv/text: a record ends at a newline outside quotes (a label may hold a quoted newline).
    end, quotes = 0, 0
    for position, byte in enumerate(partial):
        if byte == 0x22:
            quotes += 1
        elif byte == 0x0A and quotes % 2 == 0:
            end = position + 1
    return partial[:end]


# --- a server in its own process ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    """`python run.py serve` in a subprocess: for signals, exit codes and the server's own memory."""

    port: int
    process: subprocess.Popen
    log_path: Path
    environment: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, tmp_path: Path, settings: dict[str, object]) -> ServerProcess:
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMING_API_") and k != "DATABASE_URL"}
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


# --- the app on a real socket, configured as `run.py serve` runs it ---------------------------------


@dataclass
class Running:
    app: web.Application
    port: int
    # A client session for the test's ordinary requests, closed with the server.
    session: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pool(self) -> asyncpg.Pool:
        return self.app[POOL]

    @property
    def in_flight(self) -> int:
        """Requests whose handlers are still running."""
        return len(self.app[IN_FLIGHT])


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Running]:
    """Serve create_app(settings) on 127.0.0.1 with web.run_app's defaults.

    Not pytest-aiohttp's TestServer: that one cancels a handler when its client disconnects, which
    `run.py serve` does not do, and the disconnect tests are about what the real server does.
    """
    app = create_app(settings)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            yield Running(app, runner.addresses[0][1], session)
    finally:
        await runner.cleanup()


# --- making the database misbehave on cue -----------------------------------------------------------


@asynccontextmanager
async def points_locked(url: str) -> AsyncIterator[None]:
    """Hold an ACCESS EXCLUSIVE lock on points until the block ends: every page query started meanwhile waits."""
    conn = await asyncpg.connect(url)
    try:
        transaction = conn.transaction()
        await transaction.start()
        # Waits for a page query already running, so afterwards the next one is sure to block.
        await conn.execute("LOCK TABLE points IN ACCESS EXCLUSIVE MODE")
        try:
            yield
        finally:
            await transaction.rollback()
    finally:
        await conn.close()


async def service_backends_waiting_on_lock(url: str, count: int, within: float) -> list[int]:
    """The pids of the service's backends whose queries are blocked on a lock, once there are `count`."""
    conn = await asyncpg.connect(url)
    try:
        deadline = time.monotonic() + within
        while True:
            pids = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'streaming_api' "
                "AND datname = current_database() AND wait_event_type = 'Lock'"
            )
            if len(pids) >= count:
                return [record["pid"] for record in pids]
            if time.monotonic() > deadline:
                raise AssertionError(f"not {count} queries of the service blocked on the lock within {within:g} s")
            await asyncio.sleep(0.01)
    finally:
        await conn.close()


async def service_backend_waiting_on_lock(url: str, within: float) -> int:
    """The pid of the service's backend whose page query is blocked on a lock."""
    return (await service_backends_waiting_on_lock(url, 1, within))[0]


async def raw_exchange(port: int, request: bytes, within: float = 10) -> tuple[int, bytes]:
    """Send raw request bytes (anything, even what no HTTP client would send); the status and whole answer."""
    async with asyncio.timeout(within):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(request)
            answer = await reader.read()
        finally:
            writer.close()
    return int(answer.split(b" ", 2)[1]), answer


async def terminate_backend(url: str, pid: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await conn.close()


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
