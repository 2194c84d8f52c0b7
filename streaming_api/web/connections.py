"""Client connections, guarded: a time limit for each request head, and a cap that keeps room for real clients.

aiohttp closes a connection whose first request head never completes only when its keep-alive timer
runs out, and it has no cap at all: a thousand clients trickling one header byte at a time hold a
thousand sockets, and past the process's open-file limit nobody else gets in. Here every connection
has `head_timeout` seconds to deliver a complete request head (from when it opens, or from the first
byte of its next request) or it gets a 408 and is closed. At the cap, the connection that has waited
longest without a complete head (or sits idle between requests) is closed to make room; only when
every connection is busy with a request does a newcomer get a 503.

GuardedAppRunner wraps aiohttp's protocol factory, so it serves web.TCPSite as AppRunner does. It
reads three attributes of aiohttp's RequestHandler (_request_count, _request_in_progress, _messages);
tests/web/test_connections.py pins that behaviour.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
from collections import OrderedDict
from typing import Any

from aiohttp import web

from .keys import SETTINGS

log = logging.getLogger(__name__)

_408 = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
_503 = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n"
# A refused connection's request is read and dropped for this long, so the 503 is not lost to a reset.
REFUSED_LINGER_SECONDS = 2.0
# File descriptors kept out of the connection cap: the database pool, log files, the embedded server.
RESERVED_FILES = 64


class _Guarded(asyncio.Protocol):
    """One client connection: aiohttp's RequestHandler inside, its head timer and its place in the cap."""

    def __init__(self, handler: Any, guard: GuardedServer) -> None:
        self._handler = handler
        self._guard = guard
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._heads_seen = 0

    @property
    def idle(self) -> bool:
        """No request running or queued: waiting for a head, or between requests."""
        handler = self._handler
        return handler is not None and not handler._request_in_progress and not handler._messages

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        if not self._guard.admit(self):
            self._handler = None
            self._refuse()
            return
        self._handler.connection_made(transport)
        self._arm()

    def _refuse(self) -> None:
        """503, then FIN, reading and dropping the request meanwhile (closing on unread data would reset)."""
        assert self._transport is not None
        self._transport.write(_503)
        self._transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(REFUSED_LINGER_SECONDS, self._transport.abort)

    def data_received(self, data: bytes) -> None:
        handler = self._handler
        if handler is None:
            return
        before = handler._request_count
        handler.data_received(data)
        if handler._request_count != before:
            self._disarm()  # a complete head: the request is aiohttp's now
        elif self._timer is None and self.idle:
            self._arm()  # the first bytes of the next head on a kept-alive connection

    def eof_received(self) -> bool | None:
        if self._handler is None:
            return False
        return self._handler.eof_received()

    def pause_writing(self) -> None:
        if self._handler is not None:
            self._handler.pause_writing()

    def resume_writing(self) -> None:
        if self._handler is not None:
            self._handler.resume_writing()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        self._guard.forget(self)
        if self._handler is not None:
            self._handler.connection_lost(exc)

    def _arm(self) -> None:
        self._heads_seen = self._handler._request_count
        self._timer = asyncio.get_running_loop().call_later(self._guard.head_timeout, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self._handler is not None and self._handler._request_count == self._heads_seen and self.idle:
            self._guard.timed_out += 1
            self.close(_408)

    def close(self, answer: bytes | None) -> None:
        """Close this connection (saying why first, when there is something to say)."""
        if self._transport is None or self._transport.is_closing():
            return
        if answer is not None:
            self._transport.write(answer)
        if self._handler is not None:
            self._handler.force_close()
        else:
            self._transport.close()


class GuardedServer:
    """aiohttp's Server with every connection guarded; everything else passes through."""

    def __init__(self, server: Any, head_timeout: float, max_connections: int) -> None:
        self._server = server
        self.head_timeout = head_timeout
        self.max_connections = max_connections
        # Oldest first: who goes when the cap is reached.
        self.open: OrderedDict[_Guarded, None] = OrderedDict()
        self.timed_out = 0
        self.evicted = 0
        self.refused = 0

    def __call__(self) -> _Guarded:
        return _Guarded(self._server(), self)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)

    def admit(self, newcomer: _Guarded) -> bool:
        """Take the newcomer in, closing the longest idle connection first if the cap is reached."""
        if len(self.open) >= self.max_connections:
            idle = next((connection for connection in self.open if connection.idle), None)
            if idle is None:
                self.refused += 1
                if self.refused == 1 or self.refused % 1000 == 0:
                    log.warning(
                        "%d connections open, every one busy (max_connections): refusing new ones with 503",
                        len(self.open),
                    )
                return False
            self.evicted += 1
            self.forget(idle)
            idle.close(None)
        self.open[newcomer] = None
        return True

    def forget(self, connection: _Guarded) -> None:
        self.open.pop(connection, None)


class GuardedAppRunner(web.AppRunner):
    """web.AppRunner whose connections are guarded (see the module's docstring)."""

    def __init__(self, app: web.Application, *, head_timeout: float, max_connections: int, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._guard = (head_timeout, max_connections)
        self.guard: GuardedServer | None = None

    @classmethod
    def for_app(cls, app: web.Application, open_files: int, **kwargs: Any) -> GuardedAppRunner:
        """The runner `run.py serve` uses: the app's settings decide the head timeout and the cap."""
        settings = app[SETTINGS]
        cap = connection_cap(settings.max_connections, open_files, settings.pool_max_size)
        return cls(app, head_timeout=settings.request_head_timeout, max_connections=cap, access_log=None, **kwargs)

    async def _make_server(self) -> Any:
        self.guard = GuardedServer(await super()._make_server(), *self._guard)
        return self.guard


def listening_socket(host: str, port: int, backlog: int = 128, reuse_port: bool = False) -> socket.socket:
    """A TCP socket bound to host:port and listening (clients that come before the app is ready wait in the
    backlog). OSError (EADDRINUSE...) comes from here, before anything else has started. With reuse_port,
    several processes' sockets share the port and the kernel spreads new connections among them."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # "::" serves IPv4 too, as aiohttp's own sites do.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def raise_open_file_limit() -> int:
    """Raise this process's open-file limit as far as the system allows; the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if hard == resource.RLIM_INFINITY:
        target = _kernel_file_maximum()
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
            return soft
        log.debug("open-file limit raised from %d to %d", soft, target)
        return target
    return soft


def _kernel_file_maximum() -> int:
    # Linux caps a process's limit at fs.nr_open; elsewhere a generous fixed value.
    try:
        with open("/proc/sys/fs/nr_open") as nr_open:
            return int(nr_open.read())
    except (OSError, ValueError):
        return 65536


def connection_cap(configured: int, open_files: int, pool_size: int) -> int:
    """max_connections as configured, or (0) as many as the open-file limit leaves room for."""
    room = max(open_files - RESERVED_FILES - pool_size, 16)
    return min(configured, room) if configured else room
