"""The plan and its execution: every size, format, endpoint and concurrency level, each measured the same way.

For every size, format and endpoint ("a group"), when the bench owns the server it starts a fresh server
process, so no figure depends on which groups ran before it (memory a previous /standard left in the
heap, say). In a group: one warm-up request; then at concurrency 1, `repeat` runs alternating with
`repeat` runs of the matching COPY floor (so machine load drifts affect both alike); then at every
higher level one warm-up round and `repeat` runs, all clients starting together. Warm-ups are verified
and recorded, but left out of the statistics.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import psutil

from .. import __version__
from ..auth import load_keys, mint_token
from ..config import Settings
from . import floor as floors
from .client import Received, Target, decode, fetch_together, server_timing
from .probe import HealthzProbe, MetricsRssSampler, metric_sum, metrics_delta, scrape
from .progress import Progress
from .server import BenchDatabase, CpuMeter, RssFigures, RssSampler, ServerProcess, free_port, server_environment
from .verify import BodyError, ResponseError, Verifier, verify_response

DEFAULT_ROWS = 500_000
SERIES_POINTS = 200
# A level is skipped when its bodies (client) and, for /standard, the server's copies would need more.
MEMORY_BUDGET_SHARE = 0.6
# /standard holds about this many copies of its body at its peak (pages, joined body, send buffer).
STANDARD_BODY_COPIES = 3


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


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


class Runner:
    def __init__(self, options: Options, settings: Settings, progress: Progress) -> None:
        self.options = options
        self.settings = settings
        self.progress = progress
        self.owned = options.url is None
        self.verifier = Verifier()
        self.conn: asyncpg.Connection | None = None
        self.database: BenchDatabase | None = None
        self.data_path = (options.data_dir or settings.data_path / "bench").resolve()
        self.server_settings = self._server_settings() if self.owned else settings
        self.result = BenchResult(
            started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            machine=machine_info(),
            server=self._server_description(),
            options=self._options_description(),
        )

    # --- set-up -----------------------------------------------------------------------------------

    def _guards(self) -> dict[str, object]:
        """Limits the bench's own server needs lifted to run the plan (they guard, they do not speed up)."""
        rows = self.options.rows or (DEFAULT_ROWS,)
        return {
            "standard_max_concurrency": max(self.options.concurrency),
            "standard_max_rows": max(rows),
            "statement_timeout": self.options.timeout,
            "request_deadline": self.options.timeout,
        }

    def _server_settings(self) -> Settings:
        known = set(Settings.__dataclass_fields__)
        guards = {name: value for name, value in self._guards().items() if name in known}
        return self.settings.replace(data_dir=str(self.data_path), database_url=None, host="127.0.0.1", **guards)

    def _server_description(self) -> dict:
        s = self.server_settings
        described = {
            "owned": self.owned,
            "url": self.options.url,
            "data_dir": str(self.data_path) if self.owned else None,
        }
        if self.owned:
            names = ("page_size", "pool_min_size", "pool_max_size", "log_level", *self._guards())
            described["settings"] = {name: getattr(s, name) for name in names if hasattr(s, name)}
        return described

    def _options_description(self) -> dict:
        o = self.options
        return {
            "rows": list(o.rows) if o.rows else None,
            "repeat": o.repeat,
            "concurrency": list(o.concurrency),
            "formats": list(o.formats),
            "endpoints": list(o.endpoints),
            "healthz_probe": o.healthz_probe,
            "timeout_s": o.timeout,
            "floor": self.owned or bool(o.database_url),
        }

    def _token(self) -> str | None:
        if self.options.token:
            return self.options.token
        try:
            return mint_token(load_keys(self.server_settings), subject="bench", ttl=self.settings.token_ttl)
        except (OSError, RuntimeError, ValueError) as exc:
            if self.owned:
                raise
            self.result.notes.append(f"no --token given and none could be minted here ({exc}): requests go without")
            return None

    # --- the whole plan ---------------------------------------------------------------------------

    async def run(self) -> BenchResult:
        try:
            if self.owned:
                # One log per bench run: the server processes of every group append to it.
                (self.data_path / "server.log").unlink(missing_ok=True)
                self.database = BenchDatabase(self.data_path)
                self.progress.stage(f"starting the bench's embedded PostgreSQL in {self.data_path}")
                self.conn = await floors.connect(await self.database.start())
            elif self.options.database_url:
                self.conn = await floors.connect(self.options.database_url)
            else:
                self.result.notes.append(
                    "no floor: the bench did not start the server and has no --database-url to run COPY against"
                )
            if self.conn is not None:
                self.result.machine["postgresql"] = await floors.postgres_version(self.conn)
            sizes: tuple[int | None, ...] = self.options.rows or ((DEFAULT_ROWS,) if self.owned else (None,))
            for rows in sizes:
                await self._run_size(rows)
        finally:
            if self.conn is not None:
                await self.conn.close()
            if self.database is not None:
                await self.database.stop()
            self.result.machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
            self.result.finished_at = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            self.result.verification = {
                "parsed_in_full": self.verifier.parsed,
                "identical_to_a_parsed_body": self.verifier.matched,
            }
        return self.result

    async def _run_size(self, rows: int | None) -> None:
        if self.owned and self.database is not None and self.conn is not None:
            assert rows is not None
            started = time.perf_counter()
            self.progress.stage(f"making the bench's points table hold {rows:,} rows")
            seeded = await self.database.ensure_rows(self.conn, rows, self.progress.seeding())
            self.result.seeding.append(
                {"rows": rows, "seeded": seeded, "seconds": round(time.perf_counter() - started, 2)}
            )
        for fmt in self.options.formats:
            for endpoint in self.options.endpoints:
                group = await self._run_group(rows, fmt, endpoint)
                self.result.groups.append(group)
                # Remote, whole table: the count the first verified body had stands for the rest.
                if rows is None:
                    rows = next((r.rows for run in group.runs for r in run.requests if r.verified), None)

    # --- one group: one endpoint, one format, one size ----------------------------------------------

    async def _run_group(self, rows: int | None, fmt: str, endpoint: str) -> GroupResult:
        path = f"/{endpoint}?format={fmt}"
        limit = None if self.owned else rows
        if limit is not None:
            path += f"&limit={limit}"
        group = GroupResult(rows, fmt, endpoint, path, floors.FLOOR_OF_FORMAT[fmt])
        server: ServerProcess | None = None
        token = self._token()
        try:
            if self.owned:
                assert rows is not None
                port = free_port()
                log_path = self.data_path / "server.log"
                env = server_environment(self.settings, self.data_path, port, rows, self._guards())
                server = ServerProcess(env, port, log_path)
                group.server_log = str(log_path)
                self.progress.stage(f"{endpoint} {fmt}: starting a fresh server")
                target = await server.start(token or "")
            else:
                assert self.options.url is not None
                target = Target.from_url(self.options.url, token)
            await self._run_levels(group, target, server, rows, limit)
        finally:
            if server is not None:
                await server.stop()
        return group

    async def _run_levels(
        self, group: GroupResult, target: Target, server: ServerProcess | None, rows: int | None, limit: int | None
    ) -> None:
        label = f"{group.endpoint} {group.format}"
        warmup = await self._run_once(group, target, server, 1, rows, warmup=True, label=f"{label} warm-up")
        group.runs.append(warmup)
        if rows is None:
            rows = next((r.rows for r in warmup.requests if r.verified), None)
            group.rows = rows
        body_bytes = max((r.bytes for r in warmup.requests), default=0)
        levels = self.options.concurrency
        if 1 not in levels:
            await self._floor_runs(group, limit, self.options.repeat)
        for concurrency in levels:
            reason = self._too_big(group.endpoint, concurrency, body_bytes)
            if reason:
                group.skipped.append({"concurrency": concurrency, "reason": reason})
                self.result.notes.append(f"{label} {group.rows or '?'} rows ×{concurrency} skipped: {reason}")
                continue
            if concurrency > 1:
                group.runs.append(
                    await self._run_once(
                        group, target, server, concurrency, rows, warmup=True, label=f"{label} ×{concurrency} warm-up"
                    )
                )
            elif self.conn is not None:
                group.floor_runs.append(await self._floor_run(group.floor_kind, limit, rows, warmup=True))
            for repeat in range(self.options.repeat):
                if concurrency == 1 and self.conn is not None:
                    group.floor_runs.append(await self._floor_run(group.floor_kind, limit, rows, warmup=False))
                group.runs.append(
                    await self._run_once(
                        group,
                        target,
                        server,
                        concurrency,
                        rows,
                        warmup=False,
                        label=f"{label} ×{concurrency} run {repeat + 1}/{self.options.repeat}",
                    )
                )

    def _too_big(self, endpoint: str, concurrency: int, body_bytes: int) -> str | None:
        need = concurrency * body_bytes
        if self.owned and endpoint == "standard":
            need += concurrency * body_bytes * STANDARD_BODY_COPIES
        available = psutil.virtual_memory().available
        if need > MEMORY_BUDGET_SHARE * available:
            return (
                f"{concurrency} bodies of {body_bytes / 1e6:,.0f} MB need about {need / 1e9:,.1f} GB "
                f"and {available / 1e9:,.1f} GB of memory is available"
            )
        return None

    # --- the floor --------------------------------------------------------------------------------

    async def _floor_runs(self, group: GroupResult, limit: int | None, count: int) -> None:
        if self.conn is None:
            return
        group.floor_runs.append(await self._floor_run(group.floor_kind, limit, group.rows, warmup=True))
        for _ in range(count):
            group.floor_runs.append(await self._floor_run(group.floor_kind, limit, group.rows, warmup=False))

    async def _floor_run(self, kind: str, limit: int | None, rows: int | None, warmup: bool) -> FloorRunResult:
        assert self.conn is not None
        self.progress.stage(f"floor: {kind}{' warm-up' if warmup else ''}")
        postgres = self._postgres_meter()
        before = postgres.snapshot() if postgres else None
        run = await floors.measure_floor(self.conn, kind, limit=limit)
        used = CpuMeter.used(before, postgres.snapshot()) if postgres and before is not None else None
        return FloorRunResult(
            kind=kind,
            warmup=warmup,
            total_ms=run.total_ms,
            first_byte_ms=run.first_byte_ms,
            bytes=run.bytes,
            rows=run.rows,
            client_cpu_s=run.client_cpu_s,
            postgres_cpu_s=used,
            ok=rows is None or run.rows == rows,
        )

    def _postgres_meter(self) -> CpuMeter | None:
        pid = self.database.postmaster_pid() if self.database is not None else None
        return CpuMeter(pid, descendants=True) if pid else None

    # --- one run: `concurrency` requests started together -------------------------------------------

    async def _run_once(
        self,
        group: GroupResult,
        target: Target,
        server: ServerProcess | None,
        concurrency: int,
        rows: int | None,
        warmup: bool,
        label: str,
    ) -> RunResult:
        keep_series = concurrency == 1
        before = await scrape(target)
        rss_sampler: RssSampler | MetricsRssSampler | None = None
        server_cpu = CpuMeter(server.pid) if server is not None else None
        postgres_cpu = self._postgres_meter()
        if server is not None:
            rss_sampler = RssSampler(server.pid)
        elif before is not None:
            idle = metric_sum(before, "process_resident_memory_bytes")
            rss_sampler = MetricsRssSampler(target, None if idle is None else int(idle))
        probe = HealthzProbe(target) if self.options.healthz_probe and concurrency > 1 and not warmup else None
        received = [Received(group.path) for _ in range(concurrency)]

        server_before = server_cpu.snapshot() if server_cpu else None
        postgres_before = postgres_cpu.snapshot() if postgres_cpu else None
        if rss_sampler is not None:
            rss_sampler.start()
        if probe is not None:
            probe.start()
        self.progress.run_started(label, received)
        cpu_started = time.process_time()
        try:
            await fetch_together(target, received, self.options.timeout)
        finally:
            client_cpu = time.process_time() - cpu_started
            self.progress.run_finished()
            healthz = None
            if probe is not None:
                probe.stop()
                healthz = probe.figures()
            rss = None
            if isinstance(rss_sampler, RssSampler):
                rss = rss_sampler.stop()
            elif isinstance(rss_sampler, MetricsRssSampler):
                rss_sampler.stop()
                rss = rss_sampler.figures()
        server_cpu_s = CpuMeter.used(server_before, server_cpu.snapshot()) if server_cpu and server_before else None
        postgres_cpu_s = (
            CpuMeter.used(postgres_before, postgres_cpu.snapshot()) if postgres_cpu and postgres_before else None
        )
        after = await scrape(target)

        self.progress.stage(f"{label}: verifying {concurrency} bod{'y' if concurrency == 1 else 'ies'}")
        requests = [self._evaluate(group, one, rows, keep_series) for one in received]
        starts = [one.started for one in received if one.started]
        ends = [one.times[-1] for one in received if one.times]
        wall = (max(ends) - min(starts)) if starts and ends else 0.0
        verified_rows = sum(r.rows or 0 for r in requests if r.verified)
        body_bytes = sum(r.bytes for r in requests if r.verified)
        server_metrics = metrics_delta(before, after, group.endpoint, group.format)
        if server_cpu_s is None and server_metrics is not None:
            server_cpu_s = server_metrics["cpu_s"]
        run = RunResult(
            concurrency=concurrency,
            warmup=warmup,
            wall_ms=round(wall * 1000, 3),
            aggregate_rows_per_s=round(verified_rows / wall, 1) if wall else None,
            aggregate_mb_per_s=round(body_bytes / wall / 1e6, 3) if wall else None,
            client_cpu_s=round(client_cpu, 4),
            client_cpu_share=round(client_cpu / wall, 4) if wall else 0.0,
            server_cpu_s=server_cpu_s,
            postgres_cpu_s=postgres_cpu_s,
            rss=self._rss_figures(
                rss, server.fresh_rss if server else None, concurrency, min(starts) if starts else 0.0, keep_series
            ),
            healthz=None if healthz is None else {"latencies_ms": healthz.latencies_ms, "errors": healthz.errors},
            server_metrics=server_metrics,
            requests=requests,
        )
        self.progress.run_done(label, run)
        return run

    def _evaluate(self, group: GroupResult, received: Received, rows: int | None, keep_series: bool) -> RequestResult:
        """Decode and verify one response after its clock stopped; its figures, or what went wrong."""
        try:
            response = decode(received)
        except ResponseError as exc:
            body = sum(len(p) for p in received.pieces)
            received.pieces.clear()
            return RequestResult(None, False, str(exc), None, None, None, 0, body, None, None, {})
        received.pieces.clear()
        started = received.started
        result = RequestResult(
            status=response.status,
            verified=False,
            error=None,
            headers_ms=_ms(response.headers_at - started),
            first_byte_ms=_ms(None if response.first_byte_at is None else response.first_byte_at - started),
            total_ms=_ms(response.last_byte_at - started),
            bytes=len(response.body),
            wire_bytes=response.wire_bytes,
            rows=None,
            sha256=None,
            server_timing=server_timing(response.headers.get("server-timing")),
        )
        try:
            check = verify_response(self.verifier, group.format, response, rows)
        except BodyError as exc:
            result.error = str(exc)
            return result
        result.verified = True
        result.rows = check.rows
        result.sha256 = check.sha256
        if keep_series:
            result.timeline = [
                [round(at * 1000, 2), nbytes, check.rows_within(nbytes)] for at, nbytes in downsample(response.progress)
            ]
        return result

    @staticmethod
    def _rss_figures(
        rss: RssFigures | None, fresh: int | None, concurrency: int, started: float, keep_series: bool
    ) -> dict:
        """Peak RSS over a baseline: the fresh server's (before its first export) when the bench started it,
        else the RSS just before the run. Memory an earlier request left in the heap then counts too."""
        if rss is None:
            return {"source": None}
        peak = rss.peak
        baseline = fresh if fresh is not None else rss.idle
        growth = None if peak is None or baseline is None else max(peak - baseline, 0)
        figures = {
            "source": rss.source,
            "interval_ms": round(rss.interval_s * 1000, 1),
            "fresh_bytes": fresh,
            "idle_bytes": rss.idle,
            "baseline": "fresh" if fresh is not None else "idle",
            "peak_sampled_bytes": rss.peak_sampled,
            "peak_hwm_bytes": rss.peak_hwm,
            "peak_bytes": peak,
            "growth_bytes": growth,
            "growth_over_idle_bytes": rss.growth,
            "growth_per_request_bytes": None if growth is None else growth // concurrency,
            "samples": len(rss.samples),
        }
        if keep_series:
            figures["series"] = [[round((at - started) * 1000, 1), value] for at, value in downsample(rss.samples)]
        return figures


async def run_bench(options: Options, settings: Settings, progress: Progress) -> BenchResult:
    return await Runner(options, settings, progress).run()
