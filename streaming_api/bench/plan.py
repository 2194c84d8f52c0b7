"""What a plan is made of: its groups (one size, format, endpoint, coding and page size over one link),
and the settings the bench's own server runs with to carry it out."""

from __future__ import annotations

import itertools
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import psutil

from ..settings import Settings
from .coding import IDENTITY
from .filtering import encoded
from .results import Options

# The codings a server may be told to offer, in the order it prefers them.
SERVER_CODINGS = ("zstd", "gzip")


@dataclass(frozen=True)
class Group:
    rows: int | None
    format: str
    endpoint: str
    coding: str
    # /chunked's ?page_size= (None: the server's setting, no parameter).
    page_size: int | None
    # The table as a URL names it (None: the bare /chunked, the server's default table).
    table: str | None = None
    # "off": /chunked?snapshot=off, each page reading the database as it is then (db.snapshots).
    snapshot: str = "on"
    # Filters as a query (--filter, bench.filtering): value=gte.0&id=lt.1000; None: every row.
    filter: str | None = None

    @property
    def resource(self) -> str:
        """The path without its query: /chunked, or /chunked/NAME."""
        path = f"/{self.endpoint}"
        if self.table is not None:
            path += "/" + urllib.parse.quote(self.table, safe="")
        return path

    def path(self, limit: int | None) -> str:
        path = f"{self.resource}?format={self.format}"
        if self.page_size is not None:
            path += f"&page_size={self.page_size}"
        if self.snapshot == "off":
            path += "&snapshot=off"
        if limit is not None:
            path += f"&limit={limit}"
        if self.filter is not None:
            path += "&" + encoded(self.filter)
        return path

    @property
    def reads_tables(self) -> bool:
        """Arrow's plain groups (no filter) also read their rows into a pyarrow.Table: through read_table, and
        directly (bench.direct)."""
        return self.format == "arrow" and self.with_floor and self.snapshot == "on" and self.filter is None

    @property
    def with_floor(self) -> bool:
        """The floor (PostgreSQL's COPY) runs beside the groups of plain bytes (a coding changes nothing on
        PostgreSQL's side of the ratio); each page size has its own, which says which page size reaches it."""
        return self.coding == IDENTITY

    def label(self) -> str:
        parts = [self.endpoint, self.format]
        if self.coding != IDENTITY:
            parts.append(self.coding)
        if self.page_size is not None:
            parts.append(f"page {self.page_size:,}")
        if self.snapshot == "off":
            parts.append("snapshot off")
        if self.filter is not None:
            parts.append(f"filter {self.filter}")
        return " ".join(parts)


def groups(options: Options, rows: int | None, table: str | None = None) -> Iterator[Group]:
    """Every group of one size, in the order they run: format, endpoint, filter, coding (identity first: the
    coded bodies are compared with its body), page size and snapshot (for /chunked only)."""
    codings = sorted(options.encodings, key=lambda c: c != IDENTITY)
    for fmt, endpoint, where in itertools.product(options.formats, options.endpoints, options.filters):
        pages: tuple[int | None, ...] = (None,)
        snapshots: tuple[str, ...] = ("on",)
        if endpoint == "chunked":
            pages = options.page_sizes or pages
            snapshots = options.snapshots
        for coding, page_size, snapshot in itertools.product(codings, pages, snapshots):
            yield Group(rows, fmt, endpoint, coding, page_size, table, snapshot, where)


def guards(options: Options) -> dict[str, object]:
    """Settings the bench's own server needs changed to run the plan: limits lifted (they guard, they do not
    speed up), and the codings asked for offered."""
    changed: dict[str, object] = {
        # What it serves: the table measured, as the bare /chunked and as /chunked/NAME.
        "tables": (options.table,),
        "standard_max_concurrency": max(options.concurrency),
        # standard_max_bytes stays the user's: /standard's 413 for a body too big to buffer is measured too.
        "standard_max_rows": max(options.sizes),
        "statement_timeout": options.timeout,
        "request_deadline": options.timeout,
        # Not a guard, but the bench's server's own setting all the same.
        "workers": options.workers,
    }
    asked = [c for c in SERVER_CODINGS if c in options.encodings]
    if asked:
        changed["compression"] = tuple(asked)
    return changed


def server_settings(options: Options, settings: Settings, data_path: object) -> Settings:
    return settings.replace(data_dir=str(data_path), database_url=None, host="127.0.0.1", **guards(options))


def describe_server(options: Options, settings: Settings, owned: bool, data_path: object) -> dict:
    described: dict = {"owned": owned, "url": options.url, "data_dir": str(data_path) if owned else None}
    if owned:
        names = ("page_size", "first_page_size", "pool_min_size", "pool_max_size", "log_level", "zstd_level")
        names += ("gzip_level", *guards(options))
        described["settings"] = {name: getattr(settings, name) for name in names if hasattr(settings, name)}
    return described


def describe_options(options: Options, floor: bool) -> dict:
    o = options
    return {
        "table": o.table,
        "rows": list(o.rows) if o.rows else None,
        "repeat": o.repeat,
        "concurrency": list(o.concurrency),
        "formats": list(o.formats),
        "endpoints": list(o.endpoints),
        "encodings": list(o.encodings),
        "page_sizes": list(o.page_sizes) if o.page_sizes else None,
        "snapshots": list(o.snapshots),
        "filters": list(o.filters),
        "links": [link.label if link else "loopback" for link in o.links] or None,
        "shaper": o.shaper,
        "healthz_probe": o.healthz_probe,
        "timeout_s": o.timeout,
        "floor": floor,
    }


# A level is skipped when its bodies (client) and, for /standard, the server's copies would need more.
MEMORY_BUDGET_SHARE = 0.6
# /standard holds about this many copies of its body at its peak (pages, joined body, send buffer).
STANDARD_BODY_COPIES = 3


def too_big(server_copies: bool, concurrency: int, body_bytes: int) -> str | None:
    """Why a level would not fit in memory (None when it does): `concurrency` bodies of `body_bytes` in the
    client, and with `server_copies` (a /standard the bench's own server runs) the server's copies too."""
    need = concurrency * body_bytes * (1 + (STANDARD_BODY_COPIES if server_copies else 0))
    available = psutil.virtual_memory().available
    if need > MEMORY_BUDGET_SHARE * available:
        return (
            f"{concurrency} bodies of {body_bytes / 1e6:,.0f} MB need about {need / 1e9:,.1f} GB "
            f"and {available / 1e9:,.1f} GB of memory is available"
        )
    return None
