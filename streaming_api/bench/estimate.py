"""How long a bench plan takes, roughly: printed before it starts, so nobody waits a quarter of an hour unawares.

The figures are one request's time at one client on the reference machine (two cores; docs/results.md,
run A, whose full matrix took 13 minutes), scaled by rows; clients started together share the cores.
"""

from __future__ import annotations

from .plan import groups
from .results import DEFAULT_ROWS, Options

# Seconds for one request of DEFAULT_ROWS rows at one client: /standard, /chunked, and the COPY floor.
REQUEST_SECONDS = {
    "ndjson": {"standard": 0.75, "chunked": 0.6, "floor": 0.6},
    "json": {"standard": 0.76, "chunked": 0.6, "floor": 0.6},
    "csv": {"standard": 0.34, "chunked": 0.4, "floor": 0.24},
    "text": {"standard": 0.34, "chunked": 0.4, "floor": 0.24},
    "arrow": {"standard": 0.3, "chunked": 0.3, "floor": 0.15},
}
# Arrow's reads into a pyarrow.Table beside its runs (bench.reads): ADBC's and read_table's, together.
TABLE_READS_SECONDS = 0.7
# Several clients together finish this many times faster than one after another (aggregate ÷ one client).
SHARED_SPEED_UP = 1.25
SERVER_START_SECONDS = 1.5
# Meters, verification (one body per group parsed in full, the rest compared by hash), the display.
PER_RUN_SECONDS = 0.5
SEED_SECONDS = 2.0
DATABASE_START_SECONDS = 2.0
# A demo table's rows weigh this many points rows (NDJSON bytes); a table of the user's counts as points.
ROW_WEIGHT = {"points": 1.0, "orders": 3.0, "blobs": 2_000_000 / 121}
# Over a link: a body's bytes per row, and how much smaller each coding makes it (measured, NDJSON).
BODY_BYTES_PER_ROW = {"ndjson": 121, "json": 121, "csv": 69, "text": 69, "arrow": 55}
CODING_RATIO = {"identity": 1.0, "zstd": 6.7, "gzip": 4.5}
# Compressing costs the server this much more time per request, at least.
CODING_SLOWER = {"identity": 1.0, "zstd": 1.2, "gzip": 1.3}
# A link's throughput as a share of its rate (packet headers), and the relay's start.
LINK_EFFICIENCY = 0.94
RELAY_START_SECONDS = 0.3


def estimate_seconds(options: Options) -> float:
    """The plan's expected duration in seconds on the reference machine."""
    owned = options.url is None
    total = DATABASE_START_SECONDS if owned else 0.0
    weight = ROW_WEIGHT.get(options.table, 1.0)
    for rows in options.sizes:
        scale = rows * weight / DEFAULT_ROWS
        if owned:
            total += SEED_SECONDS * scale
        for link in options.links or (None,):
            for group in groups(options, rows):
                times = REQUEST_SECONDS[group.format]
                request = times[group.endpoint] * scale * CODING_SLOWER.get(group.coding, 1.0)
                if link is not None:
                    wire = rows * weight * BODY_BYTES_PER_ROW[group.format] / CODING_RATIO.get(group.coding, 1.0)
                    request = max(request, wire / (link.rate_bytes_per_s * LINK_EFFICIENCY)) + link.rtt_ms / 1000
                    total += RELAY_START_SECONDS
                floor = times["floor"] * scale if group.with_floor else 0.0
                if group.reads_tables and 1 in options.concurrency:
                    total += (options.repeat + 1) * TABLE_READS_SECONDS * scale
                total += _group_seconds(options, request, floor, owned)
    return total


def _group_seconds(options: Options, request: float, floor: float, owned: bool) -> float:
    floor_runs = (options.repeat + 1) * floor if (owned or options.database_url) else 0.0
    seconds = (SERVER_START_SECONDS if owned else 0.0) + request + floor_runs
    runs = 1  # the warm-up
    for clients in options.concurrency:
        if clients == 1:
            seconds += options.repeat * request
            runs += options.repeat
        else:
            seconds += (options.repeat + 1) * clients * request / SHARED_SPEED_UP
            runs += options.repeat + 1
    return seconds + runs * PER_RUN_SECONDS


def describe_duration(seconds: float) -> str:
    if seconds < 90:
        return f"about {max(10, round(seconds / 10) * 10):.0f} s"
    return f"about {round(seconds / 60):.0f} min"
