"""The bench's figures: statistics per group and level, and the JSON document (its headline: bench.headline).

Units: milliseconds for times, MB = 1,000,000 bytes for sizes and throughput.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

from .headline import MB, headline, run_levels
from .results import BenchResult, GroupResult

SCHEMA_VERSION = 2


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear between closest ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _spread(values: list[float]) -> dict[str, float | None]:
    return {
        "median": statistics.median(values) if values else None,
        "min": min(values) if values else None,
        "max": max(values) if values else None,
        "p95": percentile(values, 95),
        "n": len(values),
    }


def _present(values: list[float | None]) -> list[float]:
    return [v for v in values if v is not None]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _ratio(verified: list) -> float | None:
    """Decoded bytes ÷ bytes as sent, over every verified body (1.0 for identity)."""
    encoded = sum(q.encoded_bytes or 0 for q in verified)
    return sum(q.bytes for q in verified) / encoded if encoded else None


def level_stats(group: GroupResult, concurrency: int) -> dict[str, Any] | None:
    """Statistics of one group's measured (not warm-up) runs at one concurrency level."""
    runs = [r for r in group.runs if r.concurrency == concurrency and not r.warmup]
    if not runs:
        return None
    requests = [q for r in runs for q in r.requests]
    verified = [q for q in requests if q.verified]
    per_request_rows_per_s = [q.rows / (q.total_ms / 1000) for q in verified if q.rows and q.total_ms]
    per_request_mb_per_s = [q.bytes / MB / (q.total_ms / 1000) for q in verified if q.total_ms]
    stats: dict[str, Any] = {
        "concurrency": concurrency,
        "runs": len(runs),
        "requests": len(requests),
        "verified": len(verified),
        "headers_ms": _spread(_present([q.headers_ms for q in verified])),
        "first_byte_ms": _spread(_present([q.first_byte_ms for q in verified])),
        "first_row_ms": _spread(_present([q.first_row_ms for q in verified])),
        "total_ms": _spread(_present([q.total_ms for q in verified])),
        "bytes": statistics.median([q.bytes for q in verified]) if verified else None,
        # The body as sent (encoded): the bytes on the wire, headers and chunk framing aside.
        "encoded_bytes": _median(_present([q.encoded_bytes for q in verified])),
        "compression_ratio": _ratio(verified),
        "rows_per_s": statistics.median(per_request_rows_per_s) if per_request_rows_per_s else None,
        "mb_per_s": statistics.median(per_request_mb_per_s) if per_request_mb_per_s else None,
        "aggregate_rows_per_s": _spread(_present([r.aggregate_rows_per_s for r in runs])),
        "aggregate_mb_per_s": _spread(_present([r.aggregate_mb_per_s for r in runs])),
        "wall_ms": _spread([r.wall_ms for r in runs]),
        "client_cpu_s": _spread([r.client_cpu_s for r in runs]),
        "client_cpu_share": _spread([r.client_cpu_share for r in runs]),
        "server_cpu_s": _spread(_present([r.server_cpu_s for r in runs])),
        "server_cpu_ms_per_export": _spread(
            _present([r.server_cpu_s * 1000 / r.concurrency if r.server_cpu_s is not None else None for r in runs])
        ),
        "postgres_cpu_s": _spread(_present([r.postgres_cpu_s for r in runs])),
        "rss_growth_per_request_bytes": _spread(_present([r.rss.get("growth_per_request_bytes") for r in runs])),
        "rss_growth_bytes": _spread(_present([r.rss.get("growth_bytes") for r in runs])),
        "rss_idle_bytes": _spread(_present([r.rss.get("idle_bytes") for r in runs])),
        "server_timing_ms": {
            name: _spread(_present([q.server_timing.get(name) for q in verified]))
            for name in sorted({n for q in verified for n in q.server_timing})
        },
    }
    metrics = [r.server_metrics for r in runs if r.server_metrics is not None]
    if metrics:
        stats["server_metrics"] = {
            "rows": sum(m["rows"] for m in metrics),
            "bytes": sum(m["bytes"] for m in metrics),
            "requests_ok": sum(m["requests_ok"] for m in metrics),
            "first_byte_mean_ms": _spread(_present([m["first_byte_mean_ms"] for m in metrics])),
            "total_mean_ms": _spread(_present([m["total_mean_ms"] for m in metrics])),
            "client_rows": sum(q.rows or 0 for q in verified),
            # The server counts the bytes it sends: encoded ones.
            "client_bytes": sum(q.encoded_bytes or 0 for q in verified),
        }
    latencies = [lat for r in runs if r.healthz for lat in r.healthz["latencies_ms"]]
    if any(r.healthz for r in runs):
        stats["healthz_ms"] = {
            "n": len(latencies),
            "errors": sum(r.healthz["errors"] for r in runs if r.healthz),
            "p50": percentile(latencies, 50),
            "p99": percentile(latencies, 99),
            "max": max(latencies) if latencies else None,
        }
    return stats


def floor_stats(group: GroupResult) -> dict[str, Any] | None:
    runs = [f for f in group.floor_runs if not f.warmup]
    if not runs:
        return None
    totals = [f.total_ms for f in runs]
    median_total = statistics.median(totals)
    rows = runs[0].rows
    return {
        "kind": group.floor_kind,
        "runs": len(runs),
        "total_ms": _spread(totals),
        "first_byte_ms": _spread(_present([f.first_byte_ms for f in runs])),
        "bytes": runs[0].bytes,
        "rows": rows,
        "rows_per_s": rows / (median_total / 1000) if median_total else None,
        "mb_per_s": runs[0].bytes / MB / (median_total / 1000) if median_total else None,
        "client_cpu_s": _spread([f.client_cpu_s for f in runs]),
        "postgres_cpu_s": _spread(_present([f.postgres_cpu_s for f in runs])),
        "ok": all(f.ok for f in group.floor_runs),
    }


def table_read_stats(group: GroupResult) -> dict[str, Any] | None:
    """Per reader (read_table, adbc, connectorx): its measured reads into a pyarrow.Table, and its median
    total over ADBC's (both from the same group, alternated)."""
    reads = [r for r in group.table_reads if not r.warmup]
    if not reads:
        return None
    found: dict[str, Any] = {}
    for reader in dict.fromkeys(r.reader for r in reads):
        mine = [r for r in reads if r.reader == reader]
        ok = [r for r in mine if r.ok]
        found[reader] = {
            "runs": len(mine),
            "ok": len(ok),
            "rows": ok[0].rows if ok else None,
            "total_ms": _spread(_present([r.total_ms for r in ok])),
            "client_cpu_s": _spread([r.client_cpu_s for r in ok]),
            "server_cpu_s": _spread(_present([r.server_cpu_s for r in ok])),
            "postgres_cpu_s": _spread(_present([r.postgres_cpu_s for r in ok])),
        }
    adbc = (found.get("adbc") or {}).get("total_ms", {}).get("median")
    for stats in found.values():
        median = stats["total_ms"]["median"]
        stats["over_adbc"] = median / adbc if median is not None and adbc else None
    return found


def group_summary(group: GroupResult, levels: list[int]) -> dict[str, Any]:
    by_level = {c: s for c in levels if (s := level_stats(group, c)) is not None}
    floor = floor_stats(group)
    ratio = None
    one = by_level.get(1)
    if floor and one and one["total_ms"]["median"] is not None:
        ratio = one["total_ms"]["median"] / floor["total_ms"]["median"]
    base = one["aggregate_rows_per_s"]["median"] if one else None
    for stats in by_level.values():
        agg = stats["aggregate_rows_per_s"]["median"]
        stats["aggregate_vs_one_client"] = agg / base if agg is not None and base else None
    return {
        "rows": group.rows,
        "format": group.format,
        "endpoint": group.endpoint,
        "coding": group.coding,
        "page_size": group.page_size,
        "snapshot": group.snapshot,
        "filter": group.filter,
        "kept_rows": group.kept_rows,
        "link": group.link,
        "floor": floor,
        "floor_ratio": ratio,
        "levels": {str(c): s for c, s in by_level.items()},
        "skipped": group.skipped,
        "refused": group.refused,
        "table_reads": table_read_stats(group),
        "schemas": group.schemas,
    }


def failures(result: BenchResult) -> list[str]:
    """Every request that did not pass verification, and every floor run that returned a wrong count."""
    found = []
    for group in result.groups:
        where = f"/{group.endpoint} {group.format} {group.rows or '?'} rows"
        if group.coding != "identity":
            where += f" {group.coding}"
        if group.page_size is not None:
            where += f" page_size={group.page_size}"
        if group.filter is not None:
            where += f" filtered by {group.filter}"
        if group.link is not None:
            where += f" over {group.link}"
        for run in group.runs:
            for index, request in enumerate(run.requests):
                if not request.verified and request.refused is None:
                    kind = "warm-up" if run.warmup else "run"
                    found.append(f"{where} ×{run.concurrency} {kind}, client {index + 1}: {request.error}")
        found.extend(
            f"{where}: floor {f.kind} returned {f.rows:,} rows, expected {group.body_rows:,}"
            for f in group.floor_runs
            if not f.ok and group.body_rows is not None
        )
        # The service's table read by read_table: every read whole, and equal to ADBC's where typed alike.
        found.extend(
            f"{where}: read_table: {r.error}" for r in group.table_reads if r.reader == "read_table" and not r.ok
        )
        compared = group.schemas.get("adbc")
        if compared and (not compared.get("same_names") or compared.get("columns_with_other_values")):
            found.append(f"{where}: read_table's table is not adbc's: {compared}")
    return found


def document(result: BenchResult) -> dict[str, Any]:
    levels = run_levels(result)
    summaries = [group_summary(g, levels) for g in result.groups]
    problems = failures(result)
    return {
        "schema": SCHEMA_VERSION,
        "units": {"time": "ms unless the name says _s", "size": "bytes unless the name says mb (1,000,000 bytes)"},
        **asdict(result),
        "summary": summaries,
        "headline": headline(result, summaries),
        "failures": problems,
        "ok": not problems,
    }


def write_json(doc: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")
