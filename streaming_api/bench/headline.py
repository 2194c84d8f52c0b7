"""The bench's headline: the figures the performance work is judged on, per size and link, named as the
targets name them (from the groups' summaries, bench.stats)."""

from __future__ import annotations

from typing import Any

from .results import BenchResult

MB = 1e6


def run_levels(result: BenchResult) -> list[int]:
    return sorted({run.concurrency for g in result.groups for run in g.runs})


def _identity(s: dict[str, Any]) -> tuple[Any, ...]:
    """What tells a group's summary from the others of its size and link."""
    return (s["endpoint"], s["format"], s["coding"], s["page_size"], s.get("snapshot", "on"), s.get("filter"))


def main_page_size(page_sizes: list[int | None], default: int | None) -> int | None:
    """Of the page sizes a plan ran /chunked with, the one that stands for /chunked in the headline and the
    plots: none given (the server's setting), else the server's own page_size, else the smallest."""
    if None in page_sizes or not page_sizes:
        return None
    return default if default in page_sizes else min(p for p in page_sizes if p is not None)


def _scope_headline(
    summaries: list[dict[str, Any]], top: int | None, codings: list[str], default_page: int | None
) -> dict[str, Any]:
    """The headline figures of one size over one link (or loopback)."""
    page = main_page_size([s["page_size"] for s in summaries if s["endpoint"] == "chunked"], default_page)

    def find(
        endpoint: str, fmt: str, coding: str = "identity", snapshot: str = "on", where: str | None = None
    ) -> dict[str, Any] | None:
        wanted = (endpoint, fmt, coding, page if endpoint == "chunked" else None, snapshot, where)
        return next((s for s in summaries if _identity(s) == wanted), None)

    def level(summary: dict[str, Any] | None, clients: int | None) -> dict[str, Any] | None:
        return summary["levels"].get(str(clients)) if summary and clients else None

    def median(stats: dict[str, Any] | None, name: str) -> float | None:
        return stats[name]["median"] if stats and stats[name]["median"] is not None else None

    def over(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    chunked = find("chunked", "ndjson")
    one, many = level(chunked, 1), level(chunked, top)
    csv = find("chunked", "csv")
    standard = find("standard", "ndjson")
    growth = one["rss_growth_per_request_bytes"] if one else None
    figures: dict[str, Any] = {
        "link": summaries[0]["link"] if summaries else None,
        "chunked_page_size": page,
        "chunked_ndjson_total_over_floor": chunked["floor_ratio"] if chunked else None,
        "chunked_csv_total_over_floor": csv["floor_ratio"] if csv else None,
        "chunked_first_byte_ms_1_client_median": median(one, "first_byte_ms"),
        "chunked_first_row_ms_1_client_median": median(one, "first_row_ms"),
        "top_concurrency": top,
        "chunked_first_byte_ms_top_concurrency_p95": many["first_byte_ms"]["p95"] if many else None,
        "chunked_rss_growth_mb_per_request_1_client_max": growth["max"] / MB
        if growth and growth["max"] is not None
        else None,
        "chunked_aggregate_rows_per_s_top_over_1_client": many["aggregate_vs_one_client"] if many else None,
        "chunked_top_concurrency_all_verified": (many["verified"] == many["requests"]) if many else None,
        "healthz_p99_ms_during_top_concurrency_chunked": (
            many["healthz_ms"]["p99"] if many and "healthz_ms" in many else None
        ),
        "standard_ndjson_total_over_floor": standard["floor_ratio"] if standard else None,
    }
    # Arrow: against its own floor (a binary COPY), against NDJSON's total (one client, medians), its first
    # byte and its memory per export.
    arrow = find("chunked", "arrow")
    if arrow is not None:
        arrow_one = level(arrow, 1)
        arrow_growth = arrow_one["rss_growth_per_request_bytes"]["max"] if arrow_one else None
        reads = arrow.get("table_reads") or {}
        adbc_ms = median(reads.get("adbc"), "total_ms")

        figures["chunked_arrow"] = {
            "total_over_floor": arrow["floor_ratio"],
            "total_over_ndjson": over(median(arrow_one, "total_ms"), median(one, "total_ms")),
            "total_over_adbc": over(median(arrow_one, "total_ms"), adbc_ms),
            "read_table_over_adbc": (reads.get("read_table") or {}).get("over_adbc"),
            "connectorx_over_adbc": (reads.get("connectorx") or {}).get("over_adbc"),
            "read_table_ms_median": median(reads.get("read_table"), "total_ms"),
            "adbc_ms_median": adbc_ms,
            "type_differences_from_adbc": [
                d["column"] for d in (arrow.get("schemas") or {}).get("adbc", {}).get("type_differences", [])
            ],
            "first_byte_ms_1_client_median": median(arrow_one, "first_byte_ms"),
            "rss_growth_mb_per_request_1_client_max": None if arrow_growth is None else arrow_growth / MB,
        }
    standard_arrow = find("standard", "arrow")
    if standard_arrow is not None and standard_arrow.get("table_reads"):
        figures["standard_arrow_read_table_over_adbc"] = standard_arrow["table_reads"]["read_table"]["over_adbc"]
    # /chunked without its snapshot (?snapshot=off): what reading one moment costs (one client, medians).
    unheld = level(find("chunked", "ndjson", snapshot="off"), 1)
    if unheld is not None:
        first_with, first_without = median(one, "first_byte_ms"), median(unheld, "first_byte_ms")
        rss_without = unheld["rss_growth_per_request_bytes"]["max"]
        figures["chunked_snapshot_ndjson"] = {
            "total_over_snapshot_off": over(median(one, "total_ms"), median(unheld, "total_ms")),
            "first_byte_ms_minus_snapshot_off": None
            if first_with is None or first_without is None
            else first_with - first_without,
            "rss_growth_mb_per_request_max": figures["chunked_rss_growth_mb_per_request_1_client_max"],
            "rss_growth_mb_per_request_max_snapshot_off": None if rss_without is None else rss_without / MB,
        }
    # Each filter (--filter): /chunked NDJSON's total against the unfiltered export's and against its own
    # floor (PostgreSQL's COPY of the rows it keeps), and its first byte (one client, medians).
    for where in dict.fromkeys(s.get("filter") for s in summaries if s.get("filter") is not None):
        kept = find("chunked", "ndjson", where=where)
        if kept is None:
            continue
        kept_one = level(kept, 1)
        figures.setdefault("chunked_ndjson_filters", []).append(
            {
                "filter": where,
                "rows": kept["kept_rows"],
                "total_over_unfiltered": over(median(kept_one, "total_ms"), median(one, "total_ms")),
                "total_over_floor": kept["floor_ratio"],
                # Each ÷ its own floor, run alternately with it: what the machine's load did between the two
                # groups cancels out (for a filter that keeps every row, the two floors are the same COPY).
                "floor_ratio_over_unfiltered": over(kept["floor_ratio"], chunked["floor_ratio"] if chunked else None),
                "first_byte_ms_1_client_median": median(kept_one, "first_byte_ms"),
            }
        )
    # Per coding: the total against identity's (the same endpoint, one client, medians), and what the
    # compressed streams cost the server.
    for coding in codings:
        for endpoint in ("chunked", "standard"):
            coded = level(find(endpoint, "ndjson", coding), 1)
            plain = level(find(endpoint, "ndjson"), 1)
            figures[f"{endpoint}_ndjson_{coding}_total_over_identity"] = over(
                median(coded, "total_ms"), median(plain, "total_ms")
            )
        coded_summary = find("chunked", "ndjson", coding)
        coded_one, coded_many = level(coded_summary, 1), level(coded_summary, top)
        coded_growth = [
            stats["rss_growth_per_request_bytes"]["max"]
            for stats in (coded_one, coded_many)
            if stats and stats["rss_growth_per_request_bytes"]["max"] is not None
        ]
        figures[f"chunked_ndjson_{coding}"] = {
            "compression_ratio": coded_one["compression_ratio"] if coded_one else None,
            "first_row_ms_1_client_median": median(coded_one, "first_row_ms"),
            "rss_growth_mb_per_request_max": max(coded_growth) / MB if coded_growth else None,
            "healthz_p99_ms_top_concurrency": (
                coded_many["healthz_ms"]["p99"] if coded_many and "healthz_ms" in coded_many else None
            ),
            "server_cpu_ms_per_export_1_client": median(coded_one, "server_cpu_ms_per_export"),
        }
    return figures


def headline(result: BenchResult, summaries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The figures the performance work is judged on, per size (and link: "500000 over 100mbit,20ms"),
    named as the targets name them."""
    levels = [c for c in run_levels(result) if c > 1]
    top = max(levels) if levels else None
    codings = [c for c in dict.fromkeys(s["coding"] for s in summaries) if c != "identity"]
    default_page = result.server.get("settings", {}).get("page_size")
    figures: dict[str, dict[str, Any]] = {}
    for rows in dict.fromkeys(s["rows"] for s in summaries):
        for link in dict.fromkeys(s["link"] for s in summaries):
            scope = [s for s in summaries if s["rows"] == rows and s["link"] == link]
            if scope:
                key = str(rows) if link is None else f"{rows} over {link}"
                figures[key] = _scope_headline(scope, top, codings, default_page)
    return figures
