"""Every error as JSON: aiohttp's own (404, 405...) and unexpected ones (500), never a traceback to the client."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _slug(reason: str) -> str:
    return reason.lower().replace(" ", "_").replace("-", "_")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into a JSON response: aiohttp's own (404, 405...) and unexpected ones (500)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return web.json_response(
            {"error": _slug(exc.reason), "detail": f"{request.method} {request.path}: {exc.reason}"},
            status=exc.status,
            headers=allow,
        )
    except Exception:
        log.exception("unexpected error in %s %s", request.method, request.path)
        return web.json_response(
            {"error": "internal_error", "detail": "the server failed; its log has the details"}, status=500
        )
