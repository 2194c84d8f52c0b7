"""The JWT middleware: routes marked with requires_token get a 401 with a JSON body unless the token verifies;
routes marked with accepts_link also take a link's `sig=` in its place (links.py). Either way the request
gets the grant its claims give (grants.py): 401 for claims that cannot be read, 403 for a role refused."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from ...grants import GrantError, grant_of
from ...links import LINK_PARAMETER, verify_link
from ...tokens import AuthError, verify
from ..keys import CLAIMS, DEFAULT_GRANT, GRANT, KEYS, SETTINGS
from ..problems import json_error, role_refused

REALM = 'Bearer realm="streaming_api"'
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def requires_token(handler: Handler) -> Handler:
    """Mark a route handler as needing a valid JWT."""
    handler.requires_token = True  # type: ignore[attr-defined]
    return handler


def accepts_link(handler: Handler) -> Handler:
    """Mark a route handler as opened by a link's sig= too (an export: /chunked, /standard)."""
    handler.accepts_link = True  # type: ignore[attr-defined]
    return requires_token(handler)


def _claims(request: web.Request) -> dict:
    headers = request.headers.getall("Authorization", [])
    if len(headers) > 1:
        raise AuthError("more than one Authorization header")
    signatures = request.query.getall(LINK_PARAMETER, [])
    if signatures and getattr(request.match_info.handler, "accepts_link", False):
        if headers:
            raise AuthError(f"a link's {LINK_PARAMETER}= and an Authorization header: send one or the other")
        if len(signatures) > 1:
            raise AuthError(f"more than one {LINK_PARAMETER}= parameter")
        return verify_link(request.app[KEYS], signatures[0], request.path, request.query.items())
    return verify(request.app[KEYS], headers[0] if headers else None)


@web.middleware
async def jwt_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if not getattr(request.match_info.handler, "requires_token", False):
        return await handler(request)
    try:
        claims = _claims(request)
        settings = request.app[SETTINGS]
        grant = grant_of(claims, request.app[DEFAULT_GRANT], settings.token_roles)
    except (AuthError, GrantError) as exc:
        if isinstance(exc, GrantError) and exc.refused:
            raise role_refused(exc.detail) from None
        presented = not isinstance(exc, AuthError) or exc.token_presented
        challenge = REALM
        if presented:
            challenge += f', error="invalid_token", error_description="{exc.detail}"'
        raise json_error(web.HTTPUnauthorized, "unauthorized", exc.detail, {"WWW-Authenticate": challenge}) from None
    request[CLAIMS] = claims
    request[GRANT] = grant
    return await handler(request)
