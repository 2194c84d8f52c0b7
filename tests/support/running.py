"""The app on a real socket, configured as `run.py serve` runs it."""

from __future__ import annotations

import resource
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import asyncpg
from aiohttp import web

from streaming_api.settings import Settings
from streaming_api.web.app import create_app
from streaming_api.web.connections import GuardedAppRunner, GuardedServer
from streaming_api.web.keys import IN_FLIGHT, POOL


@dataclass
class Running:
    app: web.Application
    port: int
    # A client session for the test's ordinary requests, closed with the server.
    session: aiohttp.ClientSession
    runner: GuardedAppRunner

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pool(self) -> asyncpg.Pool:
        return self.app[POOL]

    @property
    def guard(self) -> GuardedServer:
        assert self.runner.guard is not None
        return self.runner.guard

    @property
    def in_flight(self) -> int:
        """Requests whose handlers are still running."""
        return len(self.app[IN_FLIGHT])


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Running]:
    """Serve create_app(settings) on 127.0.0.1 with the runner `run.py serve` uses (guarded connections).

    Not pytest-aiohttp's TestServer: that one cancels a handler when its client disconnects, which
    `run.py serve` does not do, and the disconnect tests are about what the real server does.
    """
    app = create_app(settings)
    runner = GuardedAppRunner.for_app(app, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            yield Running(app, runner.addresses[0][1], session, runner)
    finally:
        await runner.cleanup()
