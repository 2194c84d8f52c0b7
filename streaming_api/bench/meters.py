"""What a run costs, measured from outside: CPU seconds of the server, of PostgreSQL and of the client,
the server's resident memory, and its own figures from /metrics; RunMeters gathers them for one run."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import psutil

from .probe import HealthzFigures, HealthzProbe, Poller, Samples, metric_sum, scrape
from .results import downsample
from .server import process_tree, rss_sum
from .wire import Target

RSS_INTERVAL_SECONDS = 0.010
REMOTE_RSS_INTERVAL_SECONDS = 0.100


class CpuMeter:
    """CPU seconds used by a process, optionally with all its descendants (PostgreSQL's backends)."""

    def __init__(self, pid: int, descendants: bool = False) -> None:
        self.pid = pid
        self.descendants = descendants

    def snapshot(self) -> dict[int, float]:
        try:
            processes = process_tree(self.pid) if self.descendants else [psutil.Process(self.pid)]
        except psutil.Error:
            return {}
        seconds = {}
        for process in processes:
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            seconds[process.pid] = times.user + times.system
        return seconds

    @staticmethod
    def used(before: Mapping[int, float], after: Mapping[int, float]) -> float:
        return round(sum(after[pid] - before.get(pid, 0.0) for pid in after), 4)


def _hwm_bytes(pid: int) -> int | None:
    """The kernel's peak RSS of the process since its last reset (Linux VmHWM)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_hwm(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


@dataclass
class RssFigures:
    idle: int | None
    peak_sampled: int | None
    # The kernel's own high-water mark over the run, when the platform has one: misses no short peak.
    peak_hwm: int | None
    samples: list[tuple[float, int]] = field(default_factory=list)
    interval_s: float = RSS_INTERVAL_SECONDS
    source: str = "psutil"

    @property
    def peak(self) -> int | None:
        peaks = [p for p in (self.peak_sampled, self.peak_hwm) if p is not None]
        return max(peaks) if peaks else None

    @property
    def growth(self) -> int | None:
        return None if self.idle is None or self.peak is None else max(self.peak - self.idle, 0)


class RssSampler:
    """Samples a local process's RSS every 10 ms on a thread of its own (the event loop cannot delay it).
    With tree, the sum over the process and the descendants it has when sampling starts (a server's
    workers): listing them is a walk over every process on the machine, too dear to repeat every 10 ms
    on a thread that shares the GIL with the client whose first bytes it times."""

    def __init__(self, pid: int, interval: float = RSS_INTERVAL_SECONDS, tree: bool = False) -> None:
        self.process = psutil.Process(pid)
        self.interval = interval
        self.tree = tree
        self._halt = threading.Event()
        self._samples: list[tuple[float, int]] = []
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._idle: int | None = None
        self._hwm_reset = False
        self._processes = [self.process]

    def _rss(self) -> int | None:
        return rss_sum(self._processes)

    def start(self) -> None:
        if self.tree:
            with contextlib.suppress(psutil.Error):
                self._processes = process_tree(self.process.pid)
        self._idle = self._rss()
        self._hwm_reset = _reset_hwm(self.process.pid)
        self._thread.start()

    def _run(self) -> None:
        next_at = time.perf_counter()
        while not self._halt.is_set():
            rss = self._rss()
            if rss is not None:
                self._samples.append((time.perf_counter(), rss))
            next_at += self.interval
            self._halt.wait(max(next_at - time.perf_counter(), 0.0))

    def stop(self) -> RssFigures:
        self._halt.set()
        self._thread.join()
        hwm = _hwm_bytes(self.process.pid) if self._hwm_reset else None
        peak = max((rss for _, rss in self._samples), default=None)
        return RssFigures(self._idle, peak, hwm, self._samples)


class MetricsRssSampler(Poller):
    """A remote server's RSS, from process_resident_memory_bytes in its /metrics every 100 ms."""

    def __init__(self, target: Target, idle: int | None) -> None:
        super().__init__(target, "/metrics", REMOTE_RSS_INTERVAL_SECONDS, with_token=True)
        self.idle = idle
        self.samples: list[tuple[float, int]] = []

    def handle(self, status: int, body: bytes, sent_at: float, answered_at: float) -> None:
        if status != 200:
            self.errors += 1
            return
        rss = _resident_bytes(body)
        if rss is not None:
            self.samples.append((answered_at, rss))

    def figures(self) -> RssFigures:
        peak = max((rss for _, rss in self.samples), default=None)
        return RssFigures(self.idle, peak, None, self.samples, REMOTE_RSS_INTERVAL_SECONDS, "/metrics")


_RSS_METRIC = b"process_resident_memory_bytes"


def _resident_bytes(body: bytes) -> int | None:
    """process_resident_memory_bytes from an exposition, summed over its series, found without parsing
    the rest: this runs every 100 ms on a thread that shares the GIL with the client being timed."""
    total = None
    for line in body.splitlines():
        if not line.startswith(_RSS_METRIC):
            continue
        rest = line[len(_RSS_METRIC) :]  # " value", or "{labels} value"
        if rest.startswith(b"{"):
            rest = rest.rsplit(b"}", 1)[-1]
        elif not rest.startswith(b" "):
            continue  # another metric whose name starts the same
        try:
            total = (total or 0) + int(float(rest.split()[0]))
        except (ValueError, IndexError):
            continue
    return total


@dataclass
class RunCosts:
    """What one run cost, measured around it."""

    client_cpu_s: float
    server_cpu_s: float | None
    postgres_cpu_s: float | None
    rss: RssFigures | None
    healthz: HealthzFigures | None
    # The server's /metrics just before and just after the run (None without /metrics).
    metrics_before: Samples | None
    metrics_after: Samples | None


class RunMeters:
    """Every meter of one run, started together just before its requests and stopped together after.

    The server's CPU and RSS come from its process when the bench started it (`server_pid`), else from
    its /metrics; PostgreSQL's CPU from the postmaster and all its backends when the bench owns it.
    """

    def __init__(self, target: Target, server_pid: int | None, postgres_pid: int | None, probe_healthz: bool) -> None:
        self.target = target
        self.server_pid = server_pid
        # The server's process and its workers (serve --workers), not the database (the bench owns it).
        self.server_cpu = CpuMeter(server_pid, descendants=True) if server_pid is not None else None
        self.postgres_cpu = CpuMeter(postgres_pid, descendants=True) if postgres_pid is not None else None
        self.probe = HealthzProbe(target) if probe_healthz else None
        self.rss_sampler: RssSampler | MetricsRssSampler | None = None
        self._before: Samples | None = None
        self._server_before: dict[int, float] | None = None
        self._postgres_before: dict[int, float] | None = None
        self._cpu_started = 0.0

    async def start(self) -> None:
        self._before = await scrape(self.target)
        if self.server_pid is not None:
            self.rss_sampler = RssSampler(self.server_pid, tree=True)
        elif self._before is not None:
            idle = metric_sum(self._before, "process_resident_memory_bytes")
            self.rss_sampler = MetricsRssSampler(self.target, None if idle is None else int(idle))
        self._server_before = self.server_cpu.snapshot() if self.server_cpu else None
        self._postgres_before = self.postgres_cpu.snapshot() if self.postgres_cpu else None
        if self.rss_sampler is not None:
            self.rss_sampler.start()
        if self.probe is not None:
            self.probe.start()
        self._cpu_started = time.process_time()

    async def stop(self) -> RunCosts:
        """Stop every meter (at once when the requests end), then read the server's /metrics after the run."""
        client_cpu = time.process_time() - self._cpu_started
        healthz = None
        if self.probe is not None:
            self.probe.stop()
            healthz = self.probe.figures()
        rss = None
        if isinstance(self.rss_sampler, RssSampler):
            rss = self.rss_sampler.stop()
        elif isinstance(self.rss_sampler, MetricsRssSampler):
            self.rss_sampler.stop()
            rss = self.rss_sampler.figures()
        server_cpu = (
            CpuMeter.used(self._server_before, self.server_cpu.snapshot())
            if self.server_cpu and self._server_before
            else None
        )
        postgres_cpu = (
            CpuMeter.used(self._postgres_before, self.postgres_cpu.snapshot())
            if self.postgres_cpu and self._postgres_before
            else None
        )
        after = await scrape(self.target)
        return RunCosts(client_cpu, server_cpu, postgres_cpu, rss, healthz, self._before, after)


def rss_figures(rss: RssFigures | None, fresh: int | None, concurrency: int, started: float, keep_series: bool) -> dict:
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
