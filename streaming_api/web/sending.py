"""Sending a response within send_timeout: a client that stops taking bytes is dropped, one that leaves is noticed."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Awaitable

from aiohttp import web

try:
    import fcntl
    import termios

    # Bytes still in the kernel's send queue of a socket (Linux); None where the platform has no such ioctl.
    _OUTQ: int | None = termios.TIOCOUTQ
except (ImportError, AttributeError):
    _OUTQ = None


# SO_LINGER on, 0 seconds: close() sends RST instead of FIN.
_LINGER_RESET = struct.pack("ii", 1, 0)


class ClientGone(Exception):
    """The client closed the connection while the response was being sent."""


class ClientTooSlow(Exception):
    """The client took none of the pending bytes for send_timeout seconds."""


def unsent_bytes(transport: asyncio.Transport) -> int:
    """Bytes the client has yet to take: the transport's buffer plus, where the OS tells, the kernel's queue.

    The kernel's part matters: its send buffer can hold megabytes and only reports itself writable again
    once about half of it is free, so the transport's buffer alone can sit still while a client reads.
    """
    pending = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if _OUTQ is not None and sock is not None:
        with contextlib.suppress(OSError):
            pending += struct.unpack("i", fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0"))[0]
    return pending


async def send_within(request: web.Request, write: Awaitable[None], send_timeout: float) -> None:
    """Await one write of the response; fail when the client stops taking bytes for send_timeout seconds.

    The clock restarts whenever the bytes waiting for the client shrink, so a slow client that keeps
    reading is never dropped; one that stops reading entirely is dropped send_timeout seconds after it stopped.
    """
    transport = request.transport
    if transport is None or transport.is_closing():
        if asyncio.iscoroutine(write):
            write.close()
        raise ClientGone
    loop = asyncio.get_running_loop()
    check_every = min(1.0, send_timeout / 4)
    pending = unsent_bytes(transport)
    try:
        async with asyncio.timeout(send_timeout) as deadline:

            def check() -> None:
                nonlocal pending, watchdog
                now_pending = unsent_bytes(transport)
                if now_pending < pending:
                    deadline.reschedule(loop.time() + send_timeout)
                pending = now_pending
                watchdog = loop.call_later(check_every, check)

            watchdog = loop.call_later(check_every, check)
            try:
                await write
            finally:
                watchdog.cancel()
    except TimeoutError:
        raise ClientTooSlow from None
    except ConnectionError:
        raise ClientGone from None


def abort(request: web.Request) -> None:
    """Cut the connection with a reset: after the headers are out, the only honest signal that a body is
    incomplete. A plain close would end a body delimited by the connection (HTTP/1.0, and nginx's stock
    proxy_pass, which speaks HTTP/1.0 upstream) as if it were whole; a reset (SO_LINGER 0) never does,
    and behind nginx the end client then gets a chunked reply without its last chunk."""
    transport = request.transport
    if transport is None or transport.is_closing():
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()
