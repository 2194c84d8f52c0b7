"""POST /links: a link (links.py) made with the caller's own token, for the page's "Link" button.

The link carries the caller's grant (its tables and role claims, or none: the default grant) and expires
when asked, but never after the token that made it: a link cannot outlive, or widen, the token behind it.
Only a token in the Authorization header makes one; a link cannot make another.
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from ..grants import ROLE_CLAIM, TABLES_CLAIM
from ..links import BadTarget, sign
from .keys import CLAIMS, KEYS, SETTINGS
from .middleware.auth import requires_token
from .problems import json_error

MAX_BODY_BYTES = 16 * 1024


def _bad(detail: str, parameter: str | None = None) -> web.HTTPException:
    extra = {} if parameter is None else {"parameter": parameter}
    return json_error(web.HTTPBadRequest, "bad_parameter", detail, **extra)


async def _asked(request: web.Request) -> dict[str, Any]:
    """The JSON object the request sent: {"path": "/chunked/...?...", "ttl": seconds}."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise _bad(f"the body is over {MAX_BODY_BYTES:,} bytes")
    # read(n) gives what has arrived, up to n bytes: a body in several pieces is read until its end.
    raw = b""
    while len(raw) <= MAX_BODY_BYTES and (piece := await request.content.read(MAX_BODY_BYTES + 1 - len(raw))):
        raw += piece
    if len(raw) > MAX_BODY_BYTES:
        raise _bad(f"the body is over {MAX_BODY_BYTES:,} bytes")
    try:
        asked = json.loads(raw)
    except ValueError:
        asked = None
    if not isinstance(asked, dict):
        raise _bad('send a JSON object: {"path": "/chunked/<table>.csv?...", "ttl": 900}')
    return asked


@requires_token
async def make_link(request: web.Request) -> web.Response:
    asked = await _asked(request)
    claims = request[CLAIMS]
    path = asked.get("path")
    if not isinstance(path, str):
        raise _bad("path: the export's path and query, as a string (/chunked/orders.csv?limit=10)", "path")
    ttl = asked.get("ttl", request.app[SETTINGS].token_ttl)
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
        raise _bad(f"ttl: a whole number of seconds, 1 or more (got {str(ttl)[:60]!r})", "ttl")
    # Never after the token that asks for it.
    ttl = min(ttl, int(claims["exp"]) - int(time.time()))
    if ttl < 1:
        raise json_error(web.HTTPUnauthorized, "unauthorized", "the token expires now: get a new one first")
    grant = {name: claims[name] for name in (TABLES_CLAIM, ROLE_CLAIM) if name in claims}
    try:
        signed = sign(request.app[KEYS], path, ttl, grant, subject=str(claims.get("sub", "link")))
    except BadTarget as exc:
        raise _bad(f"path: {exc}", "path") from None
    except RuntimeError as exc:  # RS*/ES* verification without a private key: nothing to sign with
        raise json_error(web.HTTPNotImplemented, "cannot_sign", f"this server cannot sign links: {exc}") from None
    return web.json_response(
        {"url": f"{request.scheme}://{request.host}{signed}", "path": signed, "expires": int(time.time()) + ttl},
        headers={"Cache-Control": "no-store"},
    )
