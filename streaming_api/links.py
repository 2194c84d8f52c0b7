"""Links for tools that cannot send a header (polars, pandas and DuckDB reading a URL, a spreadsheet's
import): the export's URL with a `sig=` parameter, a token signed with the service's key that opens that
one export, and its resumes, until it expires.

    /chunked/orders.csv?columns=id,total&sig=<token>

The token holds (claim `link`) the SHA-256 of the canonical target: the path, percent-decoded, then `?`
and the query's parameters but `sig` and the resume ones (after, after_id, snapshot), each name and value
decoded, sorted, and percent-encoded again. The parameters may come in another order or encoding, and a
resume may add where to continue; any other change is another target, which the link does not open. The
token also carries the grant (grants.py: tables, role) of whoever made the link, and is never accepted as
a token in a header (tokens.verify), so it opens nothing but its export.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, urlencode

from multidict import MultiDict, MultiDictProxy, MultiMapping
from yarl import URL

from .tokens import LINK_CLAIM, AuthError, Keys, decode, mint_token

LINK_PARAMETER = "sig"
# What a resume adds to the request it repeats: where to continue, and the snapshot to continue in.
RESUME_PARAMETERS = frozenset({"after", "after_id", "snapshot"})
# The paths a link may open: the data endpoints (their tables and suffixes below them).
ENDPOINTS = ("/chunked", "/standard")


class BadTarget(ValueError):
    """What was asked to be linked is not an export's path and query; the message says why."""


def canonical_target(path: str, query: Iterable[tuple[str, str]]) -> str:
    """The path and the parameters a link binds, in one order and one encoding."""
    kept = sorted((name, value) for name, value in query if name != LINK_PARAMETER and name not in RESUME_PARAMETERS)
    return f"{path}?{urlencode(kept, quote_via=quote)}"


def target_digest(path: str, query: Iterable[tuple[str, str]]) -> str:
    canonical = canonical_target(path, query).encode("utf-8", "surrogatepass")
    return base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()


def export_target(target: str) -> URL:
    """An export's path and query (relative, percent-encoded where it needs to be), or BadTarget."""
    url = URL(target)
    if url.is_absolute() or url.fragment:
        raise BadTarget(f"give the export's path and query, as /chunked/orders.csv?limit=10 (got {target[:200]!r})")
    if not any(url.path == endpoint or url.path.startswith((f"{endpoint}/", f"{endpoint}.")) for endpoint in ENDPOINTS):
        raise BadTarget(f"a link opens an export: its path starts with /chunked or /standard (got {url.path[:200]!r})")
    if LINK_PARAMETER in url.query:
        raise BadTarget(f"the target already holds a {LINK_PARAMETER}= parameter")
    return url


def sign(keys: Keys, target: str, ttl: int, grant: Mapping[str, Any], subject: str = "link") -> str:
    """The target's path and query with the `sig=` that opens it for `ttl` seconds with `grant`'s claims."""
    url = export_target(target)
    digest = target_digest(url.path, url.query.items())
    token = mint_token(keys, subject=subject, ttl=ttl, extra={**grant, LINK_CLAIM: digest})
    written = str(url)
    return f"{written}{'&' if url.raw_query_string else '?'}{LINK_PARAMETER}={token}"


def verify_link(keys: Keys, token: str, path: str, query: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """The claims of the link whose `sig=` is `token`, opened at this path and query; AuthError (401) when
    it is altered, expired, or made for another target."""
    try:
        claims = decode(keys, token)
    except AuthError as exc:
        raise AuthError(f"bad link: {exc.detail}") from None
    if LINK_CLAIM not in claims:
        raise AuthError(f"{LINK_PARAMETER}= holds a token, not a link's signature: send it in a header")
    bound = claims[LINK_CLAIM]
    if not isinstance(bound, str) or not hmac.compare_digest(bound.encode(), target_digest(path, query).encode()):
        raise AuthError("the link does not open this URL: it was altered, or made for another export")
    return claims


def without_link(query: MultiMapping[str]) -> MultiMapping[str]:
    """The query a link's request asks for, its signature (checked by the auth middleware) left out."""
    if LINK_PARAMETER not in query:
        return query
    return MultiDictProxy(MultiDict((name, value) for name, value in query.items() if name != LINK_PARAMETER))
