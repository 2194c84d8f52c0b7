"""/metrics: Prometheus figures fed from the same RequestTiming the access log uses.

Each application has its own CollectorRegistry, so many apps in one process (tests) never collide.
With several worker processes (serve --workers), prometheus_client's multiprocess mode keeps every
worker's figures in files under PROMETHEUS_MULTIPROC_DIR and /metrics adds them up, so a counter does
not depend on which worker answers the scrape. Process figures (memory, CPU) are then left out: each
worker has its own, and a sum of them under one name would mislead.
"""

from __future__ import annotations

import os

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from .timing import RequestTiming

# Where prometheus_client's multiprocess mode keeps the workers' figures (it reads it at import).
MULTIPROCESS_DIRECTORY = "PROMETHEUS_MULTIPROC_DIR"
# Routes whose responses are exports: counted as streams in flight while they run.
DATA_ENDPOINTS = frozenset({"standard", "chunked"})
FIRST_BYTE_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


def endpoint_of(request: web.Request) -> str:
    """The route's name: a bounded label (unknown paths all count as "unmatched"; /chunked.csv is chunked)."""
    name = request.match_info.route.name
    return name.partition(".")[0] if name else "unmatched"


def multiprocess() -> bool:
    """Whether this process shares its figures with other workers (the supervisor set the directory)."""
    return bool(os.environ.get(MULTIPROCESS_DIRECTORY))


class Metrics:
    """The service's collectors in one registry; observes each request as it starts and as it ends."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        if not multiprocess():
            # RSS, CPU seconds, open fds of this process (process_resident_memory_bytes...).
            ProcessCollector(registry=self.registry)
        self.requests = Counter(
            "streaming_api_requests",
            "Requests by endpoint, format, status and outcome (complete, client_gone, aborted).",
            ("endpoint", "format", "status", "outcome"),
            registry=self.registry,
        )
        self.first_byte = Histogram(
            "streaming_api_first_byte_seconds",
            "From the request reaching the service to its first body bytes handed to the transport.",
            ("endpoint", "format"),
            buckets=FIRST_BYTE_BUCKETS,
            registry=self.registry,
        )
        self.duration = Histogram(
            "streaming_api_request_duration_seconds",
            "From the request reaching the service to its last byte handed to the transport.",
            ("endpoint", "format"),
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.rows = Counter(
            "streaming_api_rows_sent",
            "Rows sent (counted when each request ends).",
            ("endpoint", "format"),
            registry=self.registry,
        )
        self.bytes = Counter(
            "streaming_api_bytes_sent",
            "Body bytes sent (counted when each request ends).",
            ("endpoint", "format"),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "streaming_api_streams_in_flight",
            "/standard and /chunked responses being prepared or sent right now.",
            ("endpoint",),
            registry=self.registry,
            # Across workers: the sum over the ones alive.
            multiprocess_mode="livesum",
        )
        for endpoint in DATA_ENDPOINTS:
            self.in_flight.labels(endpoint).set(0)

    def started(self, request: web.Request) -> None:
        endpoint = endpoint_of(request)
        if endpoint in DATA_ENDPOINTS:
            self.in_flight.labels(endpoint).inc()

    def finished(self, request: web.Request, status: int, timing: RequestTiming) -> None:
        endpoint = endpoint_of(request)
        if endpoint in DATA_ENDPOINTS:
            self.in_flight.labels(endpoint).dec()
        fmt = timing.format
        self.requests.labels(endpoint, fmt, str(status), timing.outcome).inc()
        if timing.first_byte_at is not None:
            self.first_byte.labels(endpoint, fmt).observe(timing.first_byte_at - timing.started)
        if timing.finished_at is not None:
            self.duration.labels(endpoint, fmt).observe(timing.finished_at - timing.started)
        if timing.rows:
            self.rows.labels(endpoint, fmt).inc(timing.rows)
        if timing.bytes:
            self.bytes.labels(endpoint, fmt).inc(timing.bytes)

    def exposition(self) -> bytes:
        if not multiprocess():
            return generate_latest(self.registry)
        everyone = CollectorRegistry()
        MultiProcessCollector(everyone)
        return generate_latest(everyone)

    async def view(self, request: web.Request) -> web.Response:
        """GET /metrics: the Prometheus text exposition of this app's registry."""
        return web.Response(body=self.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})
