"""HTTP over plain sockets the test controls: a slow or vanishing client, and raw request bytes."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable


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
