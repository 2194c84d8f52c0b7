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

DEFAULT_ROWS = 500_000
SERIES_POINTS = 200


@dataclass(frozen=True)
class Options:
    url: str | None = None
    token: str | None = None
    database_url: str | None = None
    # None: DEFAULT_ROWS when the bench owns the server, the whole table otherwise.
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


@dataclass
class RequestResult:
    status: int | None
    verified: bool
    error: str | None
    headers_ms: float | None
    first_byte_ms: float | None
    total_ms: float | None
    bytes: int
    wire_bytes: int
    rows: int | None
    sha256: str | None
    server_timing: dict[str, float]
    # [ms since the request was sent, body bytes, rows] at each piece, when series are kept.
    timeline: list[list[float]] | None = None


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
class GroupResult:
    rows: int | None
    format: str
    endpoint: str
    path: str
    floor_kind: str
    floor_runs: list[FloorRunResult] = field(default_factory=list)
    runs: list[RunResult] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)
    server_log: str | None = None


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
