"""The problems a request can meet, each as an HTTP error whose JSON body names it: {"error", "detail", ...}."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

import asyncpg
from aiohttp import web

from ..export.formats import FORMATS, Format
from ..export.request import BadParameter
from ..links import without_link

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = "5"
_RETRY = {"Retry-After": RETRY_AFTER_SECONDS}


class HTTPTooManyRows(web.HTTPClientError):
    status_code = 413


def json_error(
    kind: type[web.HTTPException],
    error: str,
    detail: str,
    headers: Mapping[str, str] | None = None,
    **extra: object,
) -> web.HTTPException:
    """An HTTP error whose body names the problem; raise it from a handler or middleware."""
    body = json.dumps({"error": error, "detail": detail, **extra})
    return kind(text=body, content_type="application/json", headers=headers)


def bad_parameter(exc: BadParameter) -> web.HTTPException:
    return json_error(web.HTTPBadRequest, "bad_parameter", str(exc), parameter=exc.name, **exc.extra)


def filter_refused(exc: BaseException, parameters: list[str]) -> web.HTTPException:
    """PostgreSQL refused a filter when the export ran (its values and operators were checked before: this is
    what a check cannot foresee, such as ILIKE on a nondeterministic collation)."""
    log.info("PostgreSQL refused a filter: %s", type(exc).__name__)
    detail = f"PostgreSQL refused the filters ({', '.join(parameters)}): {str(exc).splitlines()[0][:300]}"
    return json_error(web.HTTPBadRequest, "bad_filter", detail, parameters=parameters)


def not_acceptable(accept: str | None) -> web.HTTPException:
    offered = [f.content_type for f in FORMATS.values()]
    return json_error(
        web.HTTPNotAcceptable,
        "not_acceptable",
        f"no offered format matches Accept: {(accept or '')[:200]!r}; offered: {', '.join(offered)} "
        f"(or ?format={'|'.join(FORMATS)})",
        offered=offered,
    )


def format_unavailable(fmt: Format) -> web.HTTPException:
    return json_error(
        web.HTTPNotAcceptable,
        "format_unavailable",
        f"this server cannot write {fmt.name}: it needs pyarrow (pip install 'streaming_api[arrow]')",
        format=fmt.name,
    )


def not_acceptable_encoding(accept_encoding: str | None, offered: tuple[str, ...]) -> web.HTTPException:
    return json_error(
        web.HTTPNotAcceptable,
        "not_acceptable_encoding",
        f"Accept-Encoding {(accept_encoding or '')[:200]!r} refuses identity and every coding offered "
        f"({', '.join(offered) or 'none'})",
        offered=[*offered, "identity"],
    )


def unavailable(exc: BaseException) -> web.HTTPException:
    """The database failed before the response started: 503, retry later."""
    if isinstance(exc, asyncpg.QueryCanceledError):
        log.warning("query cancelled by statement_timeout before the response started")
        return json_error(
            web.HTTPServiceUnavailable,
            "query_timeout",
            "the database query ran longer than statement_timeout; retry later or ask for fewer rows",
            _RETRY,
        )
    log.warning("database unavailable: %s", type(exc).__name__)
    return json_error(
        web.HTTPServiceUnavailable, "database_unavailable", "the database did not answer; retry later", _RETRY
    )


def deadline_passed(seconds: float) -> web.HTTPException:
    log.warning("request_deadline (%g s) passed before the response started", seconds)
    return json_error(
        web.HTTPServiceUnavailable,
        "deadline_exceeded",
        f"the request did not start within request_deadline ({seconds:g} s); retry later or ask for fewer rows",
        _RETRY,
    )


def standard_busy(limit: int) -> web.HTTPException:
    return json_error(
        web.HTTPServiceUnavailable,
        "standard_busy",
        f"/standard is already building {limit} buffered responses (standard_max_concurrency); "
        "retry later, or use /chunked, which streams without buffering",
        _RETRY,
    )


def _chunked_url(request: web.Request) -> str:
    """The same request on /chunked (the same table, format and parameters; a link's signature, bound to
    /standard, left out)."""
    path = "/chunked" + request.rel_url.raw_path.removeprefix("/standard")
    return str(request.rel_url.with_path(path, encoded=True).with_query(without_link(request.rel_url.query)))


def too_many_rows(request: web.Request, cap: int) -> web.HTTPException:
    chunked_url = _chunked_url(request)
    return json_error(
        HTTPTooManyRows,
        "too_many_rows",
        f"this request would return more than {cap:,} rows (standard_max_rows), too many to buffer; "
        f"/chunked streams any number of rows: {chunked_url}",
        max_rows=cap,
        chunked=chunked_url,
    )


def too_many_bytes(request: web.Request, cap: int) -> web.HTTPException:
    chunked_url = _chunked_url(request)
    return json_error(
        HTTPTooManyRows,
        "too_many_bytes",
        f"this request's body would be over {cap:,} bytes (standard_max_bytes), too big to buffer; "
        f"/chunked streams any size: {chunked_url}",
        max_bytes=cap,
        chunked=chunked_url,
    )


def table_not_found(name: str) -> web.HTTPException:
    """The same answer whether the table exists and is not served, or does not exist: no probing."""
    return json_error(
        web.HTTPNotFound,
        "table_not_found",
        f"no table named {name[:200]!r} is served here; GET /tables lists the tables that are",
        table=name[:200],
    )


def no_default_table() -> web.HTTPException:
    return json_error(
        web.HTTPNotFound,
        "no_default_table",
        "this server has no default table (the tables setting starts with a pattern): name one, "
        "/chunked/<table>; GET /tables lists them",
    )


def table_changed(name: str) -> web.HTTPException:
    log.warning("%s changed while a request was planned with its old shape: reading the catalog again", name)
    return json_error(
        web.HTTPServiceUnavailable,
        "table_changed",
        f"{name} changed while this request was being planned (a column or the table dropped, a privilege "
        "revoked); retry",
        {"Retry-After": "1"},
    )


def snapshot_gone(asked: tuple[str, str], why: str) -> web.HTTPException:
    """A resume names a snapshot it cannot continue in: never a silent mix of moments."""
    name = f"{asked[0]}:{asked[1]}"
    return json_error(
        web.HTTPConflict,
        "snapshot_gone",
        f"the snapshot {name} cannot be continued: {why}; restart the export (without snapshot= and after=)",
        snapshot=name,
    )


def table_not_granted(name: str) -> web.HTTPException:
    """A served table the token may not read (its tables claim, or the default_grant setting)."""
    return json_error(
        web.HTTPForbidden,
        "table_not_granted",
        f"this token may not read {name[:200]!r}; GET /tables lists the tables it may",
        table=name[:200],
    )


def role_refused(detail: str, role: str | None = None) -> web.HTTPException:
    """The token's role cannot be used: roles are off here, or the service's login cannot assume it."""
    extra = {} if role is None else {"role": role}
    return json_error(web.HTTPForbidden, "role_refused", detail, **extra)


def role_may_not_read(role: str, name: str, exc: BaseException) -> web.HTTPException:
    """The database refused the role what the request reads (its GRANTs): PostgreSQL's own words."""
    reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return json_error(
        web.HTTPForbidden,
        "role_may_not_read",
        f"the database does not let role {role!r} read {name[:200]}: {reason}",
        role=role,
        table=name[:200],
    )
