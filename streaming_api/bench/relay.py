"""The link's user-space half: a TCP relay that delays every byte by half the round trip in each direction,
and, when the kernel does not shape the link (no root, no tc), also holds it to the link's rate.

`python -m streaming_api.bench.relay --fd N --upstream HOST:PORT --delay-ms D [--rate-bps R ...]` serves
on an inherited listening socket (the bench opens it on 127.0.0.1 before starting the relay, so the relay
can run inside the link's network namespace and still be reached from the bench's). For each client it
opens one upstream connection and pipes both ways:

- each piece is held back until it is due: when it arrived plus the one-way delay, or, with a rate, when a
  token bucket (rate, burst) lets it leave plus the delay; pieces leave in the order they arrived;
- back-pressure stays TCP's: when more than `limit` bytes wait in one direction (the delay line and the
  link's queue, plus what the receiving socket has not taken), the relay stops reading from the sender
  until half of it has gone, so a slow reader slows the server instead of filling the relay's memory;
- an end (EOF, close or reset) travels behind the data before it, with the same delay.

It prints "ready" once it serves, and exits when its stdin closes (the bench is gone) or on SIGTERM.
It imports nothing from the package: it starts fast, and the bench's layering does not apply to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
from collections import deque

# Pieces are held and released at most this big, so a rate-limited link releases smoothly.
SLICE_BYTES = 16 * 1024
# Without a rate (the kernel shapes): what one direction may hold before the sender is paused.
DELAY_ONLY_LIMIT_BYTES = 4 * 1024 * 1024


class Direction:
    """One direction of the link, shared by every connection over it: when a piece of n bytes that arrives
    now is due at the far end (a token bucket, then the delay), and how much waits in it."""

    def __init__(self, delay_s: float, rate_bytes_per_s: float | None, burst_bytes: int, limit: int) -> None:
        self.delay_s = delay_s
        self.rate = rate_bytes_per_s
        self.burst_s = burst_bytes / rate_bytes_per_s if rate_bytes_per_s else 0.0
        self.limit = limit
        # When the link has finished sending everything given to it so far.
        self.free_at = 0.0
        self.queued = 0
        self.paused: set[Pipe] = set()

    def due(self, now: float, nbytes: int) -> float:
        leaves = now
        if self.rate:
            # Idle time earns at most `burst` worth of credit.
            start = max(self.free_at, now - self.burst_s)
            self.free_at = start + nbytes / self.rate
            leaves = max(self.free_at, now)
        return leaves + self.delay_s

    def delivered(self, nbytes: int) -> None:
        self.queued -= nbytes
        if self.paused and self.queued <= self.limit // 2:
            for pipe in list(self.paused):
                pipe.check_pressure()


class Pipe:
    """One connection's direction: what the source sends reaches the sink when the link says, in order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, link: Direction, slice_bytes: int | None) -> None:
        self.loop = loop
        self.link = link
        self.slice_bytes = slice_bytes
        self.source: asyncio.Transport | None = None
        self.sink: asyncio.Transport | None = None
        # (when due, bytes); None stands for the end of the stream.
        self.queue: deque[tuple[float, bytes | None]] = deque()
        self.queued = 0
        self.last_due = 0.0
        self.ended = False
        self._timer: asyncio.TimerHandle | None = None

    def push(self, data: bytes) -> None:
        now = self.loop.time()
        step = self.slice_bytes or len(data)
        for start in range(0, len(data), step):
            piece = data[start : start + step]
            self.last_due = max(self.last_due, self.link.due(now, len(piece)))
            self.queue.append((self.last_due, piece))
            self.queued += len(piece)
            self.link.queued += len(piece)
        self.check_pressure()
        self._schedule()

    def push_end(self) -> None:
        if not self.ended:
            self.ended = True
            self.last_due = max(self.last_due, self.loop.time() + self.link.delay_s)
            self.queue.append((self.last_due, None))
            self._schedule()

    def connect_sink(self, sink: asyncio.Transport) -> None:
        self.sink = sink
        self._schedule()

    def check_pressure(self) -> None:
        """Pause the source while the link holds more than its limit (with what our sink has not taken)."""
        source = self.source
        if source is None or source.is_closing():
            self.link.paused.discard(self)
            return
        buffered = self.sink.get_write_buffer_size() if self.sink is not None and not self.sink.is_closing() else 0
        waiting = self.link.queued + buffered
        if self not in self.link.paused and waiting > self.link.limit:
            source.pause_reading()
            self.link.paused.add(self)
        elif self in self.link.paused and waiting <= self.link.limit // 2:
            source.resume_reading()
            self.link.paused.discard(self)

    def sink_drained(self) -> None:
        self.check_pressure()

    def _schedule(self) -> None:
        if self._timer is None and self.queue and self.sink is not None:
            self._timer = self.loop.call_at(self.queue[0][0], self._deliver)

    def _deliver(self) -> None:
        self._timer = None
        sink = self.sink
        assert sink is not None
        now = self.loop.time()
        while self.queue and self.queue[0][0] <= now:
            _, piece = self.queue.popleft()
            if piece is None:
                self.cancel()
                if not sink.is_closing():
                    if sink.can_write_eof():
                        sink.write_eof()
                    else:
                        sink.close()
                return
            self.queued -= len(piece)
            if not sink.is_closing():
                sink.write(piece)
            self.link.delivered(len(piece))
        self.check_pressure()
        self._schedule()

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.queue.clear()
        self.link.delivered(self.queued)
        self.queued = 0
        self.link.paused.discard(self)


class _Side(asyncio.Protocol):
    """One end of a relayed connection: what it receives goes into `outgoing`."""

    def __init__(self, outgoing: Pipe, incoming: Pipe, on_lost: asyncio.Future[None] | None = None) -> None:
        self.outgoing = outgoing
        self.incoming = incoming
        self.on_lost = on_lost
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.outgoing.source = self.transport
        self.incoming.connect_sink(self.transport)  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self.outgoing.push(data)

    def eof_received(self) -> bool:
        self.outgoing.push_end()
        return True  # half-closed: keep sending the other way

    def resume_writing(self) -> None:
        self.incoming.sink_drained()

    def connection_lost(self, exc: Exception | None) -> None:
        self.outgoing.push_end()
        self.incoming.cancel()
        if self.on_lost is not None and not self.on_lost.done():
            self.on_lost.set_result(None)


class Relay:
    def __init__(
        self, upstream: tuple[str, int], delay_s: float, rate_bytes_per_s: float | None, burst_bytes: int, limit: int
    ) -> None:
        self.upstream = upstream
        # The link's two directions, shared by every connection (as one wire is): requests, responses.
        self.up = Direction(delay_s, rate_bytes_per_s, burst_bytes, limit)
        self.down = Direction(delay_s, rate_bytes_per_s, burst_bytes, limit)
        self.slice_bytes = SLICE_BYTES if rate_bytes_per_s else None
        self.connections: set[asyncio.Task[None]] = set()

    def client(self) -> asyncio.Protocol:
        loop = asyncio.get_running_loop()
        requests = Pipe(loop, self.up, self.slice_bytes)
        responses = Pipe(loop, self.down, self.slice_bytes)
        side = _Side(requests, responses)
        task = loop.create_task(self._connect_upstream(requests, responses, side))
        self.connections.add(task)
        task.add_done_callback(self.connections.discard)
        return side

    async def _connect_upstream(self, requests: Pipe, responses: Pipe, client: _Side) -> None:
        loop = asyncio.get_running_loop()
        lost = loop.create_future()
        try:
            await loop.create_connection(lambda: _Side(responses, requests, lost), *self.upstream)
        except OSError:
            if client.transport is not None:
                client.transport.abort()
            return
        await lost


def _listening_socket(fd: int) -> socket.socket:
    sock = socket.socket(fileno=fd)
    sock.setblocking(False)
    return sock


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    rate = args.rate_bps / 8 if args.rate_bps else None
    delay = args.delay_ms / 1000
    # With a rate: the link's queue plus what is on its way through the delay line.
    limit = args.limit_bytes + round(rate * delay) if rate else DELAY_ONLY_LIMIT_BYTES
    host, _, port = args.upstream.rpartition(":")
    relay = Relay((host, int(port)), delay, rate, args.burst_bytes, limit)
    server = await loop.create_server(relay.client, sock=_listening_socket(args.fd))
    stop = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))

    class _Stdin(asyncio.Protocol):
        def connection_lost(self, exc: Exception | None) -> None:
            if not stop.done():
                stop.set_result(None)

    await loop.connect_read_pipe(_Stdin, sys.stdin)
    print("ready", flush=True)
    try:
        await stop
    finally:
        server.close()
        for task in list(relay.connections):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*relay.connections, return_exceptions=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="streaming_api.bench.relay", description=__doc__.split("\n")[0])
    parser.add_argument("--fd", type=int, required=True, help="an inherited listening socket")
    parser.add_argument("--upstream", required=True, help="HOST:PORT to relay to")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="one-way delay, each direction")
    parser.add_argument("--rate-bps", type=int, default=0, help="bits per second each way (0: not limited)")
    parser.add_argument("--burst-bytes", type=int, default=0)
    parser.add_argument("--limit-bytes", type=int, default=0, help="the link's queue, with a rate")
    parser.add_argument("--owner", type=int, help="the pid of the bench that started it (to tell relays apart)")
    asyncio.run(serve(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
