"""The timing middleware: starts each request's clock, and writes its access-log line however it ends."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from urllib.parse import unquote_plus

from aiohttp import web

from ..forwarded import client_address
from ..keys import OBSERVER, SETTINGS, TIMING
from ..timing import RequestTiming

access_log = logging.getLogger("streaming_api.access")

MAX_TARGET_CHARS = 300
REDACTED = "[redacted]"
# A query parameter whose name holds one of these (case-insensitive, ignoring - and _) is a credential:
# token, access_token, jwt, key, api_key, apikey, secret, password, passwd, auth, authorization, signature...
CREDENTIAL_PARTS = ("token", "jwt", "key", "secret", "passw", "pwd", "auth", "signature", "credential", "session")
CREDENTIAL_NAMES = frozenset({"sig", "code", "pass"})
# Whatever its name: a JWT (three base64url parts, the first an encoded JSON object) or another long opaque value.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")


def is_credential_name(name: str) -> bool:
    folded = re.sub(r"[^a-z0-9]", "", unquote_plus(name, errors="replace").lower())
    return folded in CREDENTIAL_NAMES or any(part in folded for part in CREDENTIAL_PARTS)


def loggable_target(path: str, query_string: str) -> str:
    """The request's path and query for the log, with every credential-looking parameter's value (and any JWT
    anywhere) replaced by [redacted]; at most MAX_TARGET_CHARS characters."""
    items = []
    for item in query_string.split("&") if query_string else ():
        name, equals, _ = item.partition("=")
        if equals and is_credential_name(name):
            item = f"{name}={REDACTED}"
        items.append(item)
    target = path + ("?" + "&".join(items) if query_string else "")
    return _JWT.sub(REDACTED, target)[:MAX_TARGET_CHARS]


def _fmt(ms: float | None) -> str:
    return "-" if ms is None else f"{ms:.2f}"


_PARAMETER = re.compile(r"(?P<lead>[?&])(?P<name>[^=&\s\"'#?]+)=(?P<value>[^&\s\"'#]*)")


def redact_text(text: str) -> str:
    """Any text that may quote a request target (aiohttp's access log line, say), credentials replaced."""

    def parameter(found: re.Match[str]) -> str:
        if not is_credential_name(found["name"]):
            return found[0]
        return f"{found['lead']}{found['name']}={REDACTED}"

    return _JWT.sub(REDACTED, _PARAMETER.sub(parameter, text))


def _split_target(raw_path: str) -> tuple[str, str]:
    """The path and query as the client sent them (still percent-encoded: no decoded newline reaches the log)."""
    path, _, query = raw_path.partition("?")
    return path, query


def log_request(request: web.Request, status: int, timing: RequestTiming) -> None:
    """One access-log line per request, figures in milliseconds."""
    timing.finish()
    access_log.info(
        "%s %s client=%s status=%s endpoint=%s format=%s encoding=%s source=%s outcome=%s rows=%d bytes=%d "
        "headers_ms=%s first_byte_ms=%s total_ms=%s db_ms=%.2f",
        request.method,
        loggable_target(*_split_target(request.raw_path)),
        client_address(request, request.app[SETTINGS].trusted_proxies),
        status,
        timing.endpoint or "-",
        timing.format or "-",
        timing.encoding or "-",
        timing.source or "-",
        timing.outcome,
        timing.rows,
        timing.bytes,
        _fmt(timing.headers_ms),
        _fmt(timing.first_byte_ms),
        _fmt(timing.total_ms),
        timing.db_ms,
    )


def _unsent_body_bytes(request: web.Request, response: web.StreamResponse) -> int:
    """The length of a body handed back whole and not yet sent (a JSON error, /healthz); 0 for a response
    that sent its own (an export) or sends none (HEAD, 204, 304)."""
    if request.method == "HEAD" or response.prepared or response.status in (204, 304):
        return 0
    body = response.body if isinstance(response, web.Response) else None
    return len(body) if isinstance(body, bytes | bytearray) else 0


@web.middleware
async def timing_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Starts the clock outside the error and auth middlewares, so their answers (401, 404, 500) are timed
    and logged too, and writes the access-log line however the request ends."""
    timing = RequestTiming()
    request[TIMING] = timing
    observer = request.app.get(OBSERVER)
    if observer is not None:
        observer.started(request)
    status = 500
    try:
        response = await handler(request)
        status = response.status
        timing.mark_whole_body(_unsent_body_bytes(request, response))
        return response
    except web.HTTPException as exc:
        status = exc.status
        timing.mark_whole_body(_unsent_body_bytes(request, exc))
        raise
    finally:
        if status == 500 and timing.status is not None:
            status = timing.status  # headers were out before the failure: that is the status the client got
        log_request(request, status, timing)
        if observer is not None:
            observer.finished(request, status, timing)
