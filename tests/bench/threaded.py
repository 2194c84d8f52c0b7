"""The real app on a free port, served from a thread of its own: the bench runs its own event loop in the
test's thread (main([...]) as the command line runs it)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from aiohttp import web

from streaming_api.settings import Settings
from streaming_api.web.app import create_app


@contextmanager
def served_in_a_thread(settings: Settings) -> Iterator[str]:
    """create_app(settings) on 127.0.0.1; its base URL."""
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(create_app(settings))
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        loop.run_until_complete(runner.cleanup())
        loop.close()
