"""What is served, for people and for tools: GET /tables and GET /openapi.json (OpenAPI 3.1).

Both are read from the catalog as last refreshed, and both need a token (they show the tables' names and
columns, which are not for everyone). Both list only the tables the caller's token may read (grants.py):
a tool reading either sees what it can call, and a table's columns are shown to no one who may not read
it (PostgREST's OpenAPI does the same). For a token with a role the row estimates are left out: they are
the table's, not what the role's row-level security lets it see.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from aiohttp import web

from .. import __version__
from ..db.catalog import Table
from ..db.filters import OPERATORS
from ..export.formats import FORMATS
from ..export.values import json_schema
from ..links import LINK_PARAMETER
from .keys import CATALOG, GRANT, SETTINGS
from .middleware.auth import requires_token
from .replies import RESERVED

ENDPOINTS = ("chunked", "standard")


def table_path(endpoint: str, served: Table, extension: str | None = None) -> str:
    """The table's URL path on an endpoint, percent-encoded (quotes, spaces, non-ASCII)."""
    name = served.url_name + (f".{extension}" if extension else "")
    return f"/{endpoint}/{urllib.parse.quote(name, safe='')}"


def _arrow_type(served: Table, name: str) -> str | None:
    if not FORMATS["arrow"].available():
        return None
    from ..export.arrow_types import codec  # pyarrow: only where it is installed

    column = served.column(name)
    assert column is not None
    return str(codec(column.type, column).arrow_type)


def granted(request: web.Request) -> list[Table]:
    """The served tables the request's grant covers."""
    grant = request[GRANT]
    return [served for served in request.app[CATALOG].tables if grant.covers(served)]


def describe(served: Table, estimates: bool = True) -> dict[str, Any]:
    return {
        "name": served.url_name,
        "schema": served.schema,
        "table": served.name,
        "kind": served.kind,
        "columns": [
            {
                "name": column.name,
                "type": column.declared,
                "nullable": column.nullable,
                "json": json_schema(column),
                "arrow": _arrow_type(served, column.name),
            }
            for column in served.columns
        ],
        "key": list(served.key),
        "resumable": bool(served.key),
        "rows_estimate": served.estimated_rows if estimates else None,
        "urls": {endpoint: table_path(endpoint, served) for endpoint in ENDPOINTS},
        "formats": {fmt.name: table_path("chunked", served, fmt.extension) for fmt in FORMATS.values()},
    }


@requires_token
async def tables(request: web.Request) -> web.Response:
    """Every served table: its columns and their types, its key, a row estimate, its URLs."""
    catalog = request.app[CATALOG]
    readable = granted(request)
    default = (
        catalog.default.url_name if catalog.default is not None and request[GRANT].covers(catalog.default) else None
    )
    estimates = request[GRANT].role is None
    return web.json_response({"default": default, "tables": [describe(served, estimates) for served in readable]})


def _parameters(endpoint: str, served: Table) -> list[dict[str, Any]]:
    def query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}

    parameters = [
        query("format", "The body's format (wins over Accept).", {"type": "string", "enum": list(FORMATS)}),
        query("limit", "At most this many rows.", {"type": "integer", "minimum": 0}),
        query(
            "columns",
            "A comma-separated subset of the columns, in that order (a name holding a comma or a quote in "
            'double quotes, quotes doubled: "a,b").',
            {"type": "string"},
        ),
    ]
    if served.key:
        key = ", ".join(served.key)
        parameters.append(
            query(
                "after",
                f"Only rows after this key value ({key}), in key order: a JSON array of the key's values "
                "(the bare value for a key of one column). Resume with the last row received.",
                {"type": "string"},
            )
        )
    if served.integer_key:
        parameters.append(query("after_id", "after, for a key of one integer column.", {"type": "integer"}))
    if endpoint == "chunked":
        parameters.append(query("page_size", "Rows per page (and per chunk).", {"type": "integer", "minimum": 1}))
    for column in served.columns:
        # A column named like a parameter is filtered in double quotes ("limit"=eq.5).
        name = column.name if column.name not in RESERVED else '"' + column.name.replace('"', '""') + '"'
        described = (
            f"A filter on {column.name} ({column.declared}): [not.]operator.value, the operator one of "
            f"{', '.join(OPERATORS)} (in.(a,b), is.null, like.a*); may be repeated, filters are ANDed."
        )
        parameters.append({**query(name, described, {"type": "string"}), "explode": True})
    return parameters


def _row_schema_name(index: int) -> str:
    return f"table{index}_row"


def _export_operation(endpoint: str, served: Table, schema_ref: str) -> dict[str, Any]:
    row = {"$ref": schema_ref}
    described = "buffered, sent with a Content-Length" if endpoint == "standard" else "streamed page by page"
    return {
        "summary": f"{served.qualified} ({served.kind}), {described}",
        "security": [{"jwt": []}, {"link": []}],
        "parameters": _parameters(endpoint, served),
        "responses": {
            "200": {
                "description": "The rows, in key order.",
                "headers": {
                    "X-Row-Count": {"description": "The rows the body holds (exact).", "schema": {"type": "integer"}},
                    "X-Row-Count-Estimate": {"description": "An estimate of them.", "schema": {"type": "integer"}},
                    "X-Key": {"description": "The key's columns, a JSON array.", "schema": {"type": "string"}},
                },
                "content": {
                    "application/x-ndjson": {"schema": row},
                    "application/json": {"schema": {"type": "array", "items": row}},
                    "text/csv": {"schema": {"type": "string"}},
                    "text/plain": {"schema": {"type": "string"}},
                    "application/vnd.apache.arrow.stream": {"schema": {"type": "string", "format": "binary"}},
                },
            },
            "400": {"$ref": "#/components/responses/problem"},
            "401": {"$ref": "#/components/responses/problem"},
            "403": {"$ref": "#/components/responses/problem"},
            "404": {"$ref": "#/components/responses/problem"},
            "406": {"$ref": "#/components/responses/problem"},
            "413": {"$ref": "#/components/responses/problem"},
            "503": {"$ref": "#/components/responses/problem"},
        },
    }


def openapi_document(served_tables: tuple[Table, ...], base_url: str) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for index, served in enumerate(served_tables):
        name = _row_schema_name(index)
        schemas[name] = {
            "title": served.qualified,
            "type": "object",
            "properties": {column.name: json_schema(column) for column in served.columns},
            "required": list(served.names),
        }
        for endpoint in ENDPOINTS:
            paths[table_path(endpoint, served)] = {
                "get": _export_operation(endpoint, served, f"#/components/schemas/{name}")
            }
    schemas["problem"] = {
        "type": "object",
        "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
        "required": ["error", "detail"],
    }
    open_json = {"application/json": {"schema": {"type": "object"}}}
    paths["/tables"] = {
        "get": {
            "summary": "The served tables: columns, types, key, row estimate, URLs.",
            "security": [{"jwt": []}],
            "responses": {"200": {"description": "The tables.", "content": open_json}},
        }
    }
    paths["/links"] = {
        "post": {
            "summary": "A link that opens one export with no header, with the caller's grant, until it expires "
            "(never after the caller's token).",
            "security": [{"jwt": []}],
            "requestBody": {
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "path": {"type": "string", "description": "The export's path and query."},
                                "ttl": {"type": "integer", "minimum": 1, "description": "Lifetime in seconds."},
                            },
                            "required": ["path"],
                        }
                    }
                }
            },
            "responses": {
                "200": {"description": "The link: url, path (with sig=), expires (Unix time).", "content": open_json},
                "400": {"$ref": "#/components/responses/problem"},
                "401": {"$ref": "#/components/responses/problem"},
            },
        }
    }
    paths["/healthz"] = {
        "get": {
            "summary": "Whether the database answers.",
            "responses": {"200": {"description": "Serving."}, "503": {"description": "No database answers."}},
        }
    }
    paths["/openapi.json"] = {
        "get": {
            "summary": "This document.",
            "security": [{"jwt": []}],
            "responses": {"200": {"description": "OpenAPI 3.1.", "content": open_json}},
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "streaming_api", "version": __version__},
        "servers": [{"url": base_url}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "jwt": {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "Authorization: JWT <token> (or Bearer <token>).",
                },
                "link": {
                    "type": "apiKey",
                    "in": "query",
                    "name": LINK_PARAMETER,
                    "description": "A link's signature (run.py link, POST /links): opens the one export it "
                    "was made for, and its resumes (after=, snapshot=), until it expires.",
                },
            },
            "responses": {
                "problem": {
                    "description": "A problem, named in a JSON body.",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/problem"}}},
                }
            },
        },
    }


@requires_token
async def openapi(request: web.Request) -> web.Response:
    base = f"{request.scheme}://{request.host}" if request.host else request.app[SETTINGS].base_url
    return web.json_response(openapi_document(tuple(granted(request)), base))
