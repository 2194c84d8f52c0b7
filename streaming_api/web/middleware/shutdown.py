"""Graceful shutdown: requests in flight get shutdown_timeout seconds to finish, then they are aborted.

aiohttp stops listening before on_shutdown runs, so by then no new connection is accepted; the pool
and the embedded database are closed afterwards by the app's cleanup context.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..keys import IN_FLIGHT, SETTINGS

log = logging.getLogger(__name__)

# Once cancelled, a handler only has to abort its transport and release a connection.
CANCELLED_GRACE_SECONDS = 5.0


@web.middleware
async def in_flight_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Outermost: remembers the task serving each request, so shutdown can wait for it or cancel it."""
    in_flight = request.app[IN_FLIGHT]
    task = asyncio.current_task()
    assert task is not None
    in_flight.add(task)
    try:
        return await handler(request)
    finally:
        in_flight.discard(task)


async def finish_in_flight(app: web.Application) -> None:
    """on_shutdown: wait up to shutdown_timeout for requests in flight, then cancel (abort) the rest."""
    in_flight = app[IN_FLIGHT]
    if not in_flight:
        return
    timeout = app[SETTINGS].shutdown_timeout
    log.info("shutting down: waiting up to %g s for %d request(s) in flight", timeout, len(in_flight))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    # Looped: a kept-alive connection may still start a request while the others finish.
    while in_flight and (remaining := deadline - loop.time()) > 0:
        await asyncio.wait(set(in_flight), timeout=remaining)
    pending = set(in_flight)
    if pending:
        log.warning("shutting down: aborting %d request(s) still in flight after %g s", len(pending), timeout)
        for task in pending:
            task.cancel()
        await asyncio.wait(pending, timeout=CANCELLED_GRACE_SECONDS)


def cut_in_flight(app: web.Application) -> int:
    """Cancel (abort) every request in flight now, rather than give it shutdown_timeout; how many there were."""
    pending = list(app[IN_FLIGHT])
    for task in pending:
        task.cancel()
    return len(pending)


def install(app: web.Application) -> None:
    app[IN_FLIGHT] = set()
    app.on_shutdown.append(finish_in_flight)
