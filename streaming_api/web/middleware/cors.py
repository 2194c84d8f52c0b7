"""CORS, only when cors_origins is set: without it no Access-Control-* header is ever sent."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ..keys import SETTINGS

ALLOWED_METHODS = "GET, OPTIONS"
ALLOWED_HEADERS = "Authorization, Accept"
EXPOSED_HEADERS = "Server-Timing, Retry-After, X-Row-Count, X-Row-Count-Estimate, Content-Disposition"
PREFLIGHT_MAX_AGE = "600"


def _allowed_origin(request: web.Request) -> str | None:
    """The value for Access-Control-Allow-Origin, or None when this request's Origin is not allowed."""
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    allowed = request.app[SETTINGS].cors_origins
    if "*" in allowed:
        return "*"
    return origin if origin in allowed else None


@web.middleware
async def preflight_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Answer a browser's preflight (OPTIONS with Access-Control-Request-Method) for an allowed origin."""
    if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
        origin = _allowed_origin(request)
        unknown_path = isinstance(getattr(request.match_info, "http_exception", None), web.HTTPNotFound)
        if origin is not None and not unknown_path:
            return web.Response(
                status=204,
                headers={
                    "Access-Control-Allow-Methods": ALLOWED_METHODS,
                    "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                    "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
                },
            )
    return await handler(request)


async def cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: let an allowed origin read the response (and its timing headers)."""
    if "*" not in request.app[SETTINGS].cors_origins:
        # The answer depends on Origin: caches must not hand one origin's answer to another.
        response.headers.add("Vary", "Origin")
    origin = _allowed_origin(request)
    if origin is None:
        return
    response.headers["Access-Control-Allow-Origin"] = origin
    response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS


def install(app: web.Application) -> None:
    """Add CORS to an app whose settings name origins; do nothing otherwise."""
    if not app[SETTINGS].cors_origins:
        return
    app.middlewares.append(preflight_middleware)
    app.on_response_prepare.append(cors_headers)
