"""The JWT middleware: routes marked with requires_token get a 401 with a JSON body unless the token verifies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ...tokens import AuthError, verify
from ..keys import CLAIMS, KEYS
from ..problems import json_error

REALM = 'Bearer realm="streaming_api"'
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def requires_token(handler: Handler) -> Handler:
    """Mark a route handler as needing a valid JWT."""
    handler.requires_token = True  # type: ignore[attr-defined]
    return handler


@web.middleware
async def jwt_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not getattr(request.match_info.handler, "requires_token", False):
        return await handler(request)
    headers = request.headers.getall("Authorization", [])
    try:
        if len(headers) > 1:
            raise AuthError("more than one Authorization header")
        request[CLAIMS] = verify(request.app[KEYS], headers[0] if headers else None)
    except AuthError as exc:
        challenge = REALM
        if exc.token_presented:
            challenge += f', error="invalid_token", error_description="{exc.detail}"'
        raise json_error(web.HTTPUnauthorized, "unauthorized", exc.detail, {"WWW-Authenticate": challenge}) from None
    return await handler(request)
