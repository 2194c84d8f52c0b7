"""What the bench reads from the server besides the timed bodies: /metrics, and /healthz under load.

Both probes run on threads of their own with blocking keep-alive connections, so the client's event
loop (busy with the timed streams) cannot delay them, and they cannot delay it.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from .wire import Target, decode, fetch

HEALTHZ_INTERVAL_SECONDS = 0.010
PROBE_TIMEOUT_SECONDS = 10.0

Samples = dict[tuple[str, frozenset], float]


def parse_metrics(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


async def scrape(target: Target) -> Samples | None:
    """The server's /metrics, or None when it has none (turned off, refused, or not this service)."""
    try:
        response = decode(await fetch(target, "/metrics", within_seconds=PROBE_TIMEOUT_SECONDS))
        if response.status != 200:
            return None
        return parse_metrics(response.body.decode("utf-8"))
    except ValueError:
        return None


def metric_sum(samples: Samples | None, name: str, **labels: str) -> float | None:
    """The sum of a metric over every series whose labels include `labels`."""
    if samples is None:
        return None
    wanted = set(labels.items())
    series = [(sample_labels, value) for (sample_name, sample_labels), value in samples.items() if sample_name == name]
    if not series:
        return None
    return sum(value for sample_labels, value in series if wanted <= sample_labels)


def metrics_delta(before: Samples | None, after: Samples | None, endpoint: str, fmt: str) -> dict | None:
    """What the server says it did for one endpoint and format between two scrapes."""
    if before is None or after is None:
        return None

    def delta(name: str, **labels: str) -> float:
        return (metric_sum(after, name, **labels) or 0.0) - (metric_sum(before, name, **labels) or 0.0)

    labels = {"endpoint": endpoint, "format": fmt}
    first_byte_count = delta("streaming_api_first_byte_seconds_count", **labels)
    duration_count = delta("streaming_api_request_duration_seconds_count", **labels)
    return {
        "requests": int(delta("streaming_api_requests_total", **labels)),
        "requests_ok": int(delta("streaming_api_requests_total", status="200", outcome="complete", **labels)),
        "rows": int(delta("streaming_api_rows_sent_total", **labels)),
        "bytes": int(delta("streaming_api_bytes_sent_total", **labels)),
        "first_byte_mean_ms": _mean_ms(delta("streaming_api_first_byte_seconds_sum", **labels), first_byte_count),
        "total_mean_ms": _mean_ms(delta("streaming_api_request_duration_seconds_sum", **labels), duration_count),
        "cpu_s": round(delta("process_cpu_seconds_total"), 4),
    }


def _mean_ms(total_seconds: float, count: float) -> float | None:
    return round(total_seconds / count * 1000, 3) if count else None


def _connection(target: Target) -> http.client.HTTPConnection:
    kind = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
    return kind(target.host, target.port, timeout=PROBE_TIMEOUT_SECONDS)


class Poller(threading.Thread):
    """GET one path every `interval` on a keep-alive connection until stopped."""

    def __init__(self, target: Target, path: str, interval: float, with_token: bool) -> None:
        super().__init__(name=f"probe {path}", daemon=True)
        self.target = target
        self.path = target.base_path + path
        self.interval = interval
        self.headers = {"Authorization": f"JWT {target.token}"} if with_token and target.token else {}
        self._halt = threading.Event()
        self.errors = 0

    def handle(self, status: int, body: bytes, sent_at: float, answered_at: float) -> None:
        raise NotImplementedError

    def run(self) -> None:
        connection = _connection(self.target)
        next_at = time.perf_counter()
        try:
            while not self._halt.is_set():
                sent_at = time.perf_counter()
                try:
                    connection.request("GET", self.path, headers=self.headers)
                    response = connection.getresponse()
                    body = response.read()
                    self.handle(response.status, body, sent_at, time.perf_counter())
                except (OSError, http.client.HTTPException):
                    self.errors += 1
                    connection.close()
                    connection = _connection(self.target)
                next_at += self.interval
                self._halt.wait(max(next_at - time.perf_counter(), 0.0))
        finally:
            connection.close()

    def stop(self) -> None:
        self._halt.set()
        self.join()


@dataclass
class HealthzFigures:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0


class HealthzProbe(Poller):
    """/healthz every 10 ms while the timed requests run: how long the server makes a tiny request wait."""

    def __init__(self, target: Target) -> None:
        super().__init__(target, "/healthz", HEALTHZ_INTERVAL_SECONDS, with_token=False)
        self.latencies_ms: list[float] = []

    def handle(self, status: int, body: bytes, sent_at: float, answered_at: float) -> None:
        if status == 200:
            self.latencies_ms.append(round((answered_at - sent_at) * 1000, 3))
        else:
            self.errors += 1

    def figures(self) -> HealthzFigures:
        return HealthzFigures(self.latencies_ms, self.errors)
