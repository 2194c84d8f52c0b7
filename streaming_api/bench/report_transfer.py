"""The terminal tables' transfer part: what reached the client and when (first byte, first decoded row,
total), what crossed the wire (bytes as sent, compression ratio), what it cost the server, and the links.

Units: milliseconds for times, MB = 1,000,000 bytes for sizes.
"""

from __future__ import annotations

from typing import Any

from .stats import MB
from .tables import ms as _ms
from .tables import num as _num
from .tables import table as _table


def link_heading(doc: dict[str, Any], label: str | None) -> str:
    """How the link a section ran over was built (the figures depend on it)."""
    if label is None:
        return "loopback: client and server on 127.0.0.1, nothing shaped"
    link = next((x for x in doc.get("links", []) if x["label"] == label), None)
    return f"link {label}: {link['how']}" if link else f"link {label}"


def transfer_table(groups: list[dict[str, Any]]) -> list[str]:
    table = []
    for s in groups:
        endpoint = f"/{s['endpoint']}"
        page = f"{s['page_size']:,}" if s.get("page_size") is not None else "default"
        if s["endpoint"] == "standard":
            page = "-"
        for level, st in s["levels"].items():
            table.append(
                [
                    endpoint,
                    s["format"],
                    s.get("coding") or "identity",
                    page,
                    level,
                    _ms(st["first_byte_ms"]["median"]),
                    _ms(st["first_row_ms"]["median"]),
                    _ms(st["total_ms"]["median"]),
                    _num(st["encoded_bytes"] / MB if st["encoded_bytes"] is not None else None, 2),
                    _num(st["compression_ratio"], 2),
                    _ms(st["server_cpu_ms_per_export"]["median"]),
                    _num(
                        st["rss_growth_per_request_bytes"]["max"] / MB
                        if st["rss_growth_per_request_bytes"]["max"] is not None
                        else None
                    ),
                ]
            )
    header = [
        "endpoint",
        "format",
        "coding",
        "page",
        "clients",
        "1st byte",
        "1st row",
        "total",
        "wire MB",
        "ratio",
        "srv CPU ms/export",
        "RSS MB/req max",
    ]
    return [
        "",
        "What crossed the wire and when (medians): each body decoded after the clock stopped, in the pieces it came in",
        *_table(header, table, set(range(3, len(header)))),
        "1st row: when the first whole row could be decoded from what had arrived. wire MB: the body as sent "
        "(encoded; headers and chunk framing aside).",
        "ratio: decoded ÷ sent. srv CPU ms/export: the server process's CPU per run ÷ clients. page: /chunked's "
        "?page_size= (default: the server's setting).",
    ]


def coding_headline(figures: dict[str, Any]) -> list[tuple[str, str]]:
    """Headline lines for each coding the plan asked for besides identity."""
    lines = [
        ("/chunked first decoded row, 1 client, median ms", _ms(figures.get("chunked_first_row_ms_1_client_median")))
    ]
    top = figures.get("top_concurrency")
    for key, value in figures.items():
        if not (key.startswith("chunked_ndjson_") and isinstance(value, dict)):
            continue
        coding = key.removeprefix("chunked_ndjson_")
        lines += [
            (
                f"/chunked ndjson {coding} total ÷ identity total, 1 client",
                _num(figures.get(f"chunked_ndjson_{coding}_total_over_identity"), 2),
            ),
            (
                f"/standard ndjson {coding} total ÷ identity total, 1 client",
                _num(figures.get(f"standard_ndjson_{coding}_total_over_identity"), 2),
            ),
            (f"/chunked ndjson {coding} compression ratio", _num(value["compression_ratio"], 2)),
            (f"/chunked {coding} first decoded row, 1 client, median ms", _ms(value["first_row_ms_1_client_median"])),
            (
                f"/chunked {coding} server CPU per export, 1 client, ms",
                _ms(value["server_cpu_ms_per_export_1_client"]),
            ),
            (
                f"/chunked {coding} server RSS growth per request, max MB",
                _num(value["rss_growth_mb_per_request_max"]),
            ),
        ]
        if top is not None:
            lines.append(
                (
                    f"/healthz p99 ms while {top} {coding} /chunked streams run",
                    _ms(value["healthz_p99_ms_top_concurrency"]),
                )
            )
    return lines
