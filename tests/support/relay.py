"""A TCP relay on 127.0.0.1 in front of a real server that cuts chosen responses after N bytes.

The client under test talks to the relay; the relay forwards both ways and, for the connections
it is told to cut, passes the first N bytes of the response (headers included) and then drops the
connection, as a failing network or a crashing server would.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

READ_BYTES = 1 << 16


class CuttingRelay:
    def __init__(self, upstream_port: int, cuts: Sequence[int] = (), cut_every: int | None = None) -> None:
        """cuts[i]: response bytes the i-th connection gets before it is cut; later ones pass whole,
        unless cut_every is set, which cuts every connection after the listed ones at that many bytes."""
        self.upstream_port = upstream_port
        self._cuts = list(cuts)
        self._cut_every = cut_every
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        # When hold_first_cut is set, the first cut waits for `release` after its N bytes went out.
        self.hold_first_cut = False
        self.holding = asyncio.Event()
        self.release = asyncio.Event()
        self.connections = 0
        # Connections whose upstream could not be reached (the server was down).
        self.refused = 0
        self.upstream_refused = asyncio.Event()
        self.request_lines: list[str] = []

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def start(self) -> CuttingRelay:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _budget(self, index: int) -> int | None:
        return self._cuts[index] if index < len(self._cuts) else self._cut_every

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        index = self.connections
        self.connections += 1
        budget = self._budget(index)
        try:
            try:
                upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            except OSError:
                self.refused += 1
                self.upstream_refused.set()
                client_writer.transport.abort()
                return
            requests = asyncio.create_task(self._forward_requests(client_reader, upstream_writer))
            try:
                await self._forward_response(upstream_reader, client_writer, budget, hold=index == 0)
            finally:
                requests.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await requests
                upstream_writer.transport.abort()
        finally:
            client_writer.transport.abort()
            self._tasks.discard(task)

    async def _forward_requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(READ_BYTES):
            if data[:4] == b"GET ":
                self.request_lines.append(data.split(b"\r\n", 1)[0].decode("latin-1"))
            writer.write(data)
            await writer.drain()
        writer.write_eof()

    async def _forward_response(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, budget: int | None, hold: bool
    ) -> None:
        while data := await reader.read(READ_BYTES):
            if budget is not None and len(data) >= budget:
                writer.write(data[:budget])
                await writer.drain()
                if hold and self.hold_first_cut:
                    self.holding.set()
                    await self.release.wait()
                return
            if budget is not None:
                budget -= len(data)
            writer.write(data)
            await writer.drain()
        # The server ended the response cleanly: pass the end on.
        with contextlib.suppress(ConnectionError):
            writer.write_eof()
            await writer.drain()


# Response bytes (headers included) before a cut: well inside every format's body of the test table.
FIRST_CUT = 20_001
SECOND_CUT = 15_009

MakeRelay = Callable[..., Awaitable[CuttingRelay]]
