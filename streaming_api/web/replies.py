"""From a data request to a Reply: the table its path names, the export its query asks for, the coding.

A path names a served table (/chunked/sales.orders, /chunked/orders.csv) or none (/chunked: the default
table). A name that is not served is a 404 that says the same whether the table exists or not.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, replace

import asyncpg
from aiohttp import web

from ..db.catalog import Table
from ..db.filters import FilterError, Where
from ..db.filters import check as check_filters
from ..db.lanes import Lanes
from ..db.statements import validate_key_sql
from ..export.formats import BY_EXTENSION, Format, NotAcceptable
from ..export.request import BadParameter, Export, FormatUnavailable, parse_export
from ..links import LINK_PARAMETER, without_link
from ..settings import Settings
from . import encoding, problems
from .keys import CATALOG, GRANT, SETTINGS, TIMING

# The parameters each endpoint takes.
PARAMETERS = {"format", "limit", "after", "after_id", "columns", "snapshot"}
CHUNKED_PARAMETERS = PARAMETERS | {"page_size"}
# Names that never filter, whichever endpoint: every endpoint's parameters, and credentials (token=). A
# column of such a name is filtered in double quotes ("limit"=eq.5).
RESERVED = frozenset(CHUNKED_PARAMETERS | {"token", LINK_PARAMETER})


@dataclass(frozen=True)
class Reply:
    """What a data request asked for: the export, and the content coding its bytes go out in."""

    export: Export
    coding: str

    def encoder(self, settings: Settings) -> encoding.Encoder | None:
        return encoding.encoder(self.coding, {"zstd": settings.zstd_level, "gzip": settings.gzip_level})


def _table(request: web.Request) -> tuple[Table, Format | None]:
    """The served table the path names, and the format its suffix names (if any); 403 if the request's
    grant does not cover it."""
    served, path_format = _served(request)
    if not request[GRANT].covers(served):
        raise problems.table_not_granted(served.url_name)
    return served, path_format


def _served(request: web.Request) -> tuple[Table, Format | None]:
    catalog = request.app[CATALOG]
    extension = request.match_info.get("extension")
    if "table" not in request.match_info:
        if catalog.default is None:
            raise problems.no_default_table()
        return catalog.default, None if extension is None else BY_EXTENSION[extension]
    name = request.match_info["table"]
    found = catalog.find(name)
    if found is not None:
        return found, None
    stem, dot, suffix = name.rpartition(".")
    if dot and suffix in BY_EXTENSION:
        found = catalog.find(stem)
        if found is not None:
            return found, BY_EXTENSION[suffix]
    raise problems.table_not_found(name)


def make_reply(request: web.Request, endpoint: str) -> Reply:
    settings = request.app[SETTINGS]
    timing = request[TIMING]
    timing.endpoint = endpoint
    served, path_format = _table(request)
    timing.table = served.qualified
    streaming = endpoint == "chunked"
    accept = ",".join(request.headers.getall("Accept", [])) or None
    try:
        export = parse_export(
            without_link(request.query),
            served,
            accept,
            CHUNKED_PARAMETERS if streaming else PARAMETERS,
            default_page_size=settings.page_size if streaming else None,
            whole_page_size=min(settings.arrow_page_size, settings.max_page_size) if streaming else None,
            max_page_size=settings.max_page_size,
            first_page_size=settings.first_page_size if streaming else None,
            path_format=path_format,
            page_bytes=settings.page_bytes if streaming else None,
            reserved=RESERVED,
        )
    except BadParameter as exc:
        raise problems.bad_parameter(exc) from None
    except NotAcceptable:
        raise problems.not_acceptable(accept) from None
    except FormatUnavailable as exc:
        raise problems.format_unavailable(exc.format) from None
    timing.format = export.format.name
    accept_encoding = ",".join(request.headers.getall("Accept-Encoding", [])) or None
    try:
        coding = encoding.negotiate(accept_encoding, settings.compression)
    except encoding.NotAcceptableEncoding:
        raise problems.not_acceptable_encoding(accept_encoding, settings.compression) from None
    timing.encoding = coding
    return Reply(export, coding)


async def resolve_values(lanes: Lanes, export: Export) -> Export:
    """The request's values read as their columns' types by PostgreSQL, and kept as the literals it writes
    for them: `after` (unless an integer already checked) and the filters' (db.filters.check). A value that
    is not one of them is a 400 naming the parameter and the type. Nothing to read: no statement."""
    if export.after_text is None and (not export.filters or export.where is not None):
        return export
    served = export.table
    async with lanes.connection(Lanes.FIRST) as conn:
        if export.after_text is not None:
            try:
                prepared = await conn.prepare(validate_key_sql(served), name="")
                literals = await prepared.fetchrow(*export.after_text)
            except asyncpg.DataError as exc:
                types = ", ".join(f"{name} {served.column(name).declared}" for name in served.key)  # type: ignore[union-attr]
                detail = f"{str(exc).splitlines()[0]} (the key of {served.qualified} is {types})"
                raise problems.bad_parameter(BadParameter("after", detail)) from None
            export = export.resolved(tuple(literals))
        if export.filters and export.where is None:
            try:
                filters = await check_filters(conn, served, export.filters)
            except FilterError as exc:
                raise problems.bad_parameter(BadParameter.of_filter(exc)) from None
            export = replace(export, filters=filters, where=Where(served, filters))
    return export


def content_disposition(served: Table, fmt: Format) -> str:
    """The download is a file named for the table (text is for reading in place); a non-ASCII name goes
    in filename* (RFC 6266), with an ASCII stand-in for clients that know only filename."""
    disposition = "inline" if fmt.name == "text" else "attachment"
    name = f"{served.file_stem}.{fmt.extension}"
    ascii_name = name.encode("ascii", "replace").decode().replace("?", "_").replace('"', "_").replace("\\", "_")
    if ascii_name == name:
        return f'{disposition}; filename="{name}"'
    return f"{disposition}; filename=\"{ascii_name}\"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"
