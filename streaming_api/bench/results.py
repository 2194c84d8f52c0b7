"""What a bench run is asked to do (Options) and what it found (the results, kept whole for the JSON)."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import psutil

from .. import __version__
from ..db.demo import DEMO_TABLES
from ..settings import Settings
from .linkspec import LinkSpec

DEFAULT_ROWS = 500_000
SERIES_POINTS = 200


@dataclass(frozen=True)
class Options:
    url: str | None = None
    token: str | None = None
    database_url: str | None = None
    # The table measured: a demo table (db.demo) in the bench's own database, any served table with --url.
    table: str = "points"
    # None: the demo table's default size when the bench owns the server, the whole table otherwise.
    rows: tuple[int, ...] | None = None
    repeat: int = 5
    concurrency: tuple[int, ...] = (1, 8, 32)
    formats: tuple[str, ...] = ("ndjson", "csv", "json")
    endpoints: tuple[str, ...] = ("standard", "chunked")
    healthz_probe: bool = False
    data_dir: Path | None = None
    timeout: float = 900.0
    # Worker processes of the bench's own server (serve --workers).
    workers: int = 1
    # Content codings asked for (Accept-Encoding), one group each; identity alone by default.
    encodings: tuple[str, ...] = ("identity",)
    # /chunked's ?page_size= values, one group each; None: the server's setting (no parameter).
    page_sizes: tuple[int, ...] | None = None
    # /chunked with its snapshot ("on", the default) and without it (?snapshot=off), one group each.
    snapshots: tuple[str, ...] = ("on",)
    # Filter queries (bench.filtering), one group each on both endpoints; None: every row (the default).
    filters: tuple[str | None, ...] = (None,)
    # Links the client reaches the server over (bench.link), each running the whole plan; None: loopback.
    links: tuple[LinkSpec | None, ...] = ()
    # How a link is built: "auto" (tbf on a veth pair when root, else the shaping relay), "tbf", "relay".
    shaper: str = "auto"

    @property
    def sizes(self) -> tuple[int, ...]:
        """The sizes the bench's own database is seeded to: as given, else the demo table's default
        (blobs: 200 rows of 2 MB)."""
        demo = DEMO_TABLES.get(self.table)
        return self.rows or (demo.default_rows if demo else DEFAULT_ROWS,)

    def data_path(self, settings: Settings) -> Path:
        """Where the bench keeps its database, its server's log, its JSON and its plot."""
        return (self.data_dir or settings.data_path / "bench").resolve()


@dataclass
class RequestResult:
    status: int | None
    verified: bool
    error: str | None
    headers_ms: float | None
    first_byte_ms: float | None
    total_ms: float | None
    # The body decoded (for identity, as sent).
    bytes: int
    # The whole response as received: status line, headers, chunk framing and the body as sent.
    wire_bytes: int
    rows: int | None
    sha256: str | None
    server_timing: dict[str, float]
    # [ms since the request was sent, body bytes as sent, rows decodable] at each piece, when series are kept.
    timeline: list[list[float]] | None = None
    # The coding the response came in (its Content-Encoding), and its body as sent: bytes on the wire.
    coding: str | None = None
    encoded_bytes: int | None = None
    # When the first row could be decoded from what had arrived (ms since the request was sent).
    first_row_ms: float | None = None
    # /standard's 413 for an export too big to buffer (its error: too_many_bytes, too_many_rows): an
    # expected refusal, not a failure.
    refused: str | None = None


@dataclass
class RunResult:
    concurrency: int
    warmup: bool
    wall_ms: float
    aggregate_rows_per_s: float | None
    aggregate_mb_per_s: float | None
    client_cpu_s: float
    # Client CPU over the run's wall time: the share of one core the measuring side used.
    client_cpu_share: float
    server_cpu_s: float | None
    postgres_cpu_s: float | None
    rss: dict
    healthz: dict | None
    server_metrics: dict | None
    requests: list[RequestResult]


@dataclass
class FloorRunResult:
    kind: str
    warmup: bool
    total_ms: float
    first_byte_ms: float | None
    bytes: int
    rows: int
    client_cpu_s: float
    postgres_cpu_s: float | None
    ok: bool


@dataclass
class TableReadResult:
    """One read of the group's rows into a pyarrow.Table (bench.direct): the service's through read_table, or a
    direct connection's (adbc, connectorx)."""

    reader: str
    warmup: bool
    total_ms: float | None
    rows: int | None
    client_cpu_s: float
    server_cpu_s: float | None
    postgres_cpu_s: float | None
    ok: bool
    error: str | None = None


@dataclass
class GroupResult:
    rows: int | None
    format: str
    endpoint: str
    path: str
    floor_kind: str
    coding: str = "identity"
    # /chunked's ?page_size= (None: the server's setting).
    page_size: int | None = None
    # "off": /chunked?snapshot=off (its pages read the database as it is when each runs).
    snapshot: str = "on"
    # The filters its requests carry (a query, --filter), None for every row: its floor is filtered alike;
    # and the rows they keep, what each body holds (None: not known, then the warm-up's count).
    filter: str | None = None
    kept_rows: int | None = None
    # The link's label ("100mbit,20ms"), None for loopback; how it was built is in BenchResult.links.
    link: str | None = None
    floor_runs: list[FloorRunResult] = field(default_factory=list)
    runs: list[RunResult] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    server_log: str | None = None
    # Bytes of RSS the bench's own server took on with its first one-row export of this format (what the
    # format loads once per process), kept out of the memory figures (bench.server.ServerProcess.prime).
    format_load_bytes: int | None = None
    # The server's refusal of the group's requests (/standard, a body too big to buffer): its error and
    # detail; the levels are then not run.
    refused: dict | None = None
    # Format arrow, one client: the rows read into a pyarrow.Table, alternated with the runs (bench.direct).
    table_reads: list[TableReadResult] = field(default_factory=list)
    # read_table's table against each direct reader's: types, nullability, values (bench.direct.compare_schemas).
    schemas: dict = field(default_factory=dict)

    @property
    def body_rows(self) -> int | None:
        """The rows each body must hold: the size's, or those the filter keeps."""
        return self.rows if self.filter is None else self.kept_rows


@dataclass
class BenchResult:
    started_at: str
    machine: dict
    server: dict
    options: dict
    groups: list[GroupResult] = field(default_factory=list)
    seeding: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    verification: dict = field(default_factory=dict)
    finished_at: str | None = None
    # Every link the plan ran over: how it was built (tbf on veth, or the relay), its parameters.
    links: list[dict] = field(default_factory=list)
    # The table measured: its name, columns and types, key, how its bodies were verified (bench.subject).
    table: dict = field(default_factory=dict)


def machine_info() -> dict:
    model = None
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), None)
    except OSError:
        pass
    return {
        "cpu_model": model or platform.processor() or None,
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_bytes": psutil.virtual_memory().total,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "aiohttp": aiohttp.__version__,
        "asyncpg": asyncpg.__version__,
        "streaming_api": __version__,
        "postgresql": None,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "load_average_at_end": None,
    }


def downsample(points: list, limit: int = SERIES_POINTS) -> list:
    """At most `limit` points, evenly spaced, always keeping the first and the last."""
    if len(points) <= limit:
        return points
    step = (len(points) - 1) / (limit - 1)
    return [points[round(i * step)] for i in range(limit)]


def thin(points: list, limit: int = SERIES_POINTS) -> list:
    """At most about twice `limit` of a progress series' points (time first, a growing figure second), the
    first and the last kept, and a point kept whenever time or the figure moved on by 1/limit of its whole
    since the last one kept: evenly spaced by index would leave gaps where many small pieces came together."""
    if len(points) <= limit:
        return points
    step_time = (points[-1][0] - points[0][0]) / limit
    step_value = (points[-1][1] - points[0][1]) / limit
    kept = [points[0]]
    for point in points[1:-1]:
        last = kept[-1]
        if point[0] - last[0] >= step_time or point[1] - last[1] >= step_value:
            kept.append(point)
    kept.append(points[-1])
    return kept
