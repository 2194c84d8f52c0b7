"""Headers every response the application makes carries, whatever produced it."""

from __future__ import annotations

from aiohttp import web


async def _security_headers(request: web.Request, response: web.StreamResponse) -> None:
    # Browsers must take every body as the type it says it is (a JSON error is never run as script).
    response.headers.setdefault("X-Content-Type-Options", "nosniff")


def install(app: web.Application) -> None:
    app.on_response_prepare.append(_security_headers)
