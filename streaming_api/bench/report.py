"""The terminal table the bench prints, from its JSON document (see stats.document).

Units: milliseconds for times, MB = 1,000,000 bytes for sizes and throughput.
"""

from __future__ import annotations

import statistics
from typing import Any

from .floor import FLOOR_LABELS
from .report_reads import reads_headline, reads_table
from .report_transfer import coding_headline, link_heading, transfer_table
from .stats import MB
from .tables import endpoint_label as _endpoint
from .tables import mb as _mb
from .tables import ms as _ms
from .tables import num as _num
from .tables import spread_range as _range
from .tables import table as _table


def _coding(s: dict[str, Any]) -> str:
    return s.get("coding") or "identity"


def _header(doc: dict[str, Any]) -> list[str]:
    machine, server, options = doc["machine"], doc["server"], doc["options"]
    sizes = list(dict.fromkeys(s["rows"] for s in doc["summary"]))
    size_text = ", ".join(f"{r:,}" if r else "the whole table" for r in sizes)
    cores = machine["logical_cores"]
    repeat = options["repeat"]
    name = (doc.get("table") or {}).get("name") or options.get("table") or "?"
    lines = [
        f"streaming_api bench · table {name} · {size_text} rows · {repeat} run{'s' if repeat != 1 else ''} "
        "per level after a "
        f"warm-up · {machine['cpu_model'] or 'CPU'}, {cores} core{'s' if cores != 1 else ''} · "
        f"PostgreSQL {machine['postgresql'] or '?'} · Python {machine['python']}"
    ]
    if server["owned"]:
        settings = server.get("settings", {})
        lines.append(
            f"server: started by the bench, a fresh process per endpoint and format (page_size "
            f"{settings.get('page_size')}, pool {settings.get('pool_min_size')}–{settings.get('pool_max_size')})"
        )
    else:
        lines.append(f"server: {server['url']} (not started by the bench: its memory comes from its /metrics)")
    lines.append(
        f"load average (1 min): {machine['load_average_at_start'][0]} at start, "
        f"{(machine['load_average_at_end'] or ['?'])[0]} at the end · times in ms · MB = 1,000,000 bytes"
    )
    return lines


def _floor_table(groups: list[dict[str, Any]]) -> list[str]:
    floors: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for s in groups:
        if s["floor"]:
            floors.setdefault((s["floor"]["kind"], s.get("filter")), []).append(s["floor"])
    if not floors:
        return []
    table = []
    for (kind, where), found in floors.items():
        totals = [f["total_ms"] for f in found]
        median = statistics.median(t["median"] for t in totals)
        table.append(
            [
                kind,
                f"{_ms(median)} ({_ms(min(t['min'] for t in totals))}–{_ms(max(t['max'] for t in totals))})",
                _ms(statistics.median(f["first_byte_ms"]["median"] or 0 for f in found)),
                _num(found[0]["rows"] / (median / 1000), 0),
                _num(found[0]["bytes"] / MB / (median / 1000)),
                _num(statistics.median(f["client_cpu_s"]["median"] for f in found), 2),
                _num(statistics.median(f["postgres_cpu_s"]["median"] or 0 for f in found), 2),
                FLOOR_LABELS[kind] + ("" if where is None else f" WHERE {where}"),
            ]
        )
    header = ["floor", "total (min–max)", "1st byte", "rows/s", "MB/s", "CPU s: asyncpg", "PostgreSQL", "query"]
    return [
        "The floor: PostgreSQL's own export of the same rows, read by asyncpg into a sink that discards them",
        *_table(header, table, {1, 2, 3, 4, 5, 6}),
        "",
    ]


def _main_table(groups: list[dict[str, Any]]) -> list[str]:
    table = []
    for s in groups:
        for level, st in s["levels"].items():
            c = int(level)
            fb = st["first_byte_ms"]
            growth = st["rss_growth_per_request_bytes"]
            table.append(
                [
                    _endpoint(s),
                    s["format"],
                    _coding(s),
                    level,
                    _ms(fb["median"]),
                    _ms(fb["p95"]),
                    _ms(fb["max"]),
                    _range(st["total_ms"]),
                    _num(s["floor_ratio"], 2) if c == 1 and s["floor_ratio"] else "",
                    _num(st["aggregate_rows_per_s"]["median"] if c > 1 else st["rows_per_s"], 0),
                    _num(st["aggregate_mb_per_s"]["median"] if c > 1 else st["mb_per_s"]),
                    _num(st["aggregate_vs_one_client"], 2) if c > 1 else "",
                    f"{_mb(growth['median'])} ({_mb(growth['max'])})" if growth["median"] is not None else "-",
                    f"{st['verified']}/{st['requests']}",
                ]
            )
        for skip in s["skipped"]:
            table.append([_endpoint(s), s["format"], _coding(s), str(skip["concurrency"]), "skipped (see notes)"])
        if s.get("refused"):
            refusal = f"refused: 413 {s['refused']['error']}"
            table.append([_endpoint(s), s["format"], _coding(s), "1", "-", "-", "-", refusal])
    width = 14
    table = [row + [""] * (width - len(row)) for row in table]
    header = [
        "endpoint",
        "format",
        "coding",
        "clients",
        "1st byte p50",
        "p95",
        "max",
        "total median (min–max)",
        "÷floor",
        "rows/s",
        "MB/s",
        "÷1 client",
        "RSS MB/req (max)",
        "verified",
    ]
    return [
        *_table(header, table, set(range(3, width))),
        "1st byte: time to the first body byte. total: time to the last byte. ÷floor: median total ÷ the floor's "
        "(one client).",
        "rows/s, MB/s: one client's at 1 client; above, all clients' together, first request sent to last byte "
        "received;",
        "÷1 client: that aggregate ÷ one client's. RSS MB/req: server peak RSS over the freshly started server's, "
        "÷ clients.",
    ]


def _server_table(groups: list[dict[str, Any]]) -> list[str]:
    table = []
    for s in groups:
        for level, st in s["levels"].items():
            metrics = st.get("server_metrics")
            timing = st["server_timing_ms"]
            agree = "-"
            if metrics:
                same = metrics["rows"] == metrics["client_rows"] and metrics["bytes"] == metrics["client_bytes"]
                agree = "yes" if same else "NO"
            table.append(
                [
                    _endpoint(s),
                    s["format"],
                    _coding(s),
                    level,
                    _ms(st["headers_ms"]["median"]),
                    _ms(metrics["first_byte_mean_ms"]["median"]) if metrics else "-",
                    _ms(st["first_byte_ms"]["median"]),
                    _ms(metrics["total_mean_ms"]["median"]) if metrics else "-",
                    _ms(st["total_ms"]["median"]),
                    _ms(timing["db"]["median"]) if "db" in timing else "-",
                    agree,
                    _num(st["server_cpu_s"]["median"], 2),
                    _num(st["postgres_cpu_s"]["median"], 2),
                    f"{_num(st['client_cpu_s']['median'], 2)} ({st['client_cpu_share']['median'] * 100:.0f}%)",
                ]
            )
    header = [
        "endpoint",
        "format",
        "coding",
        "clients",
        "headers",
        "1st byte srv",
        "cli",
        "total srv",
        "cli",
        "db",
        "rows,bytes =",
        "CPU s: server",
        "PostgreSQL",
        "client (of wall)",
    ]
    return [
        "",
        "The same requests as the server saw them (/metrics means, Server-Timing db), and the CPU used per run",
        *_table(header, table, set(range(3, 14)) - {10}),
        "srv: the server's own figure; cli: the client's. rows,bytes =: the server's /metrics count of rows and "
        "bytes sent equals what the client received.",
        "db: Server-Timing (for /chunked, its first page only). CPU: per run, from the kernel (the client's also "
        "as a share of one core over the run).",
    ]


def _healthz_table(groups: list[dict[str, Any]]) -> list[str]:
    healthz = [
        [
            _endpoint(s),
            s["format"],
            _coding(s),
            level,
            str(h["n"]),
            _ms(h["p50"]),
            _ms(h["p99"]),
            _ms(h["max"]),
            str(h["errors"]),
        ]
        for s in groups
        for level, st in s["levels"].items()
        if (h := st.get("healthz_ms"))
    ]
    if not healthz:
        return []
    return [
        "",
        "/healthz, asked every 10 ms on a connection of its own while the streams ran (ms)",
        *_table(
            ["endpoint", "format", "coding", "clients", "answers", "p50", "p99", "max", "errors"],
            healthz,
            set(range(3, 9)),
        ),
    ]


def _headline(doc: dict[str, Any]) -> list[str]:
    out = ["", "Headline figures"]
    for key, figures in doc["headline"].items():
        top = figures["top_concurrency"]
        rows, _, link = key.partition(" over ")
        where = f"  {int(rows):,} rows" if rows != "None" else "  whole table"
        out.append(f"{where} over {link}:" if link else f"{where}:")
        lines = [
            ("/chunked ndjson total ÷ COPY row_to_json floor", _num(figures["chunked_ndjson_total_over_floor"], 2)),
            ("/chunked csv total ÷ COPY csv floor", _num(figures["chunked_csv_total_over_floor"], 2)),
            ("/chunked first byte, 1 client, median ms", _ms(figures["chunked_first_byte_ms_1_client_median"])),
            (
                "/chunked server RSS growth per request, 1 client, max MB",
                _num(figures["chunked_rss_growth_mb_per_request_1_client_max"]),
            ),
            ("/standard ndjson total ÷ COPY row_to_json floor", _num(figures["standard_ndjson_total_over_floor"], 2)),
        ]
        if top is not None:
            lines[3:3] = [
                (
                    f"/chunked first byte, {top} clients, p95 ms",
                    _ms(figures["chunked_first_byte_ms_top_concurrency_p95"]),
                ),
                (
                    f"/chunked aggregate rows/s, {top} clients ÷ 1 client",
                    _num(figures["chunked_aggregate_rows_per_s_top_over_1_client"], 2),
                ),
                (
                    f"/healthz p99 ms while {top} /chunked streams run",
                    _ms(figures["healthz_p99_ms_during_top_concurrency_chunked"]),
                ),
            ]
        if "chunked_arrow" in figures:
            arrow = figures["chunked_arrow"]
            lines += [
                ("/chunked arrow total ÷ COPY binary floor", _num(arrow["total_over_floor"], 2)),
                ("/chunked arrow total ÷ /chunked ndjson total, 1 client", _num(arrow["total_over_ndjson"], 2)),
                ("/chunked arrow first byte, 1 client, median ms", _ms(arrow["first_byte_ms_1_client_median"])),
                (
                    "/chunked arrow RSS growth per request, 1 client, max MB",
                    _num(arrow["rss_growth_mb_per_request_1_client_max"]),
                ),
            ]
        lines += reads_headline(figures)
        if "chunked_snapshot_ndjson" in figures:
            held = figures["chunked_snapshot_ndjson"]
            first_byte = held["first_byte_ms_minus_snapshot_off"]
            lines += [
                (
                    "/chunked ndjson total ÷ the same with snapshot=off, 1 client",
                    _num(held["total_over_snapshot_off"], 3),
                ),
                (
                    "/chunked first byte − with snapshot=off, median ms",
                    "-" if first_byte is None else f"{first_byte:+.2f}",
                ),
                (
                    "/chunked RSS growth per request, max MB: snapshot on / off",
                    f"{_num(held['rss_growth_mb_per_request_max'])} / "
                    f"{_num(held['rss_growth_mb_per_request_max_snapshot_off'])}",
                ),
            ]
        for kept in figures.get("chunked_ndjson_filters", []):
            first_byte = kept["first_byte_ms_1_client_median"]
            lines += [
                (f"/chunked ndjson ?{kept['filter']} ({_num(kept['rows'], 0)} rows)", ""),
                ("    total ÷ unfiltered total, 1 client", _num(kept["total_over_unfiltered"], 3)),
                ("    its ÷floor ÷ the unfiltered ÷floor", _num(kept.get("floor_ratio_over_unfiltered"), 3)),
                ("    total ÷ COPY of the same rows (its floor)", _num(kept["total_over_floor"], 3)),
                ("    first byte, 1 client, median ms", "-" if first_byte is None else _ms(first_byte)),
            ]
        lines.extend(coding_headline(figures))
        out.extend(f"    {name:<58} {value}" for name, value in lines)
    return out


def _verdict(doc: dict[str, Any]) -> list[str]:
    verification = doc["verification"]
    requests = [request for g in doc["groups"] for run in g["runs"] for request in run["requests"]]
    refused = sum(request.get("refused") is not None for request in requests)
    total = len(requests) - refused
    if doc["failures"]:
        out = [f"VERIFICATION FAILED: {len(doc['failures'])} of {total} responses did not pass:"]
        out.extend(f"  ✗ {problem}" for problem in doc["failures"][:20])
        if len(doc["failures"]) > 20:
            out.append(f"  ... and {len(doc['failures']) - 20} more (all of them in the JSON)")
        return ["", *out]
    checked = (doc.get("table") or {}).get("verified", "the rows asked for")
    lines = [
        "",
        f"Verified: all {total} bodies (warm-ups included) are well formed and hold exactly {checked}; "
        f"{verification['parsed_in_full']} parsed in full, "
        f"{verification['identical_to_a_parsed_body']} byte-identical (SHA-256) to one that was.",
    ]
    if any(s.get("filter") for s in doc["summary"]):
        lines.append(
            "Filtered groups: their bodies hold exactly the rows PostgreSQL counts for the filter, the key going "
            "strictly up."
        )
    if refused:
        lines.append(f"Refused: {refused} /standard request(s) with 413, a body too big to buffer (as it should).")
    return lines


def render(doc: dict[str, Any]) -> str:
    out = _header(doc)
    summaries = doc["summary"]
    links = list(dict.fromkeys(s.get("link") for s in summaries))
    for rows in dict.fromkeys(s["rows"] for s in summaries):
        for link in links:
            groups = [s for s in summaries if s["rows"] == rows and s.get("link") == link]
            if not groups:
                continue
            out.append("")
            size = f"{rows:,} rows" if rows else "the whole table"
            out.append(f"── {size} over {link} ──" if link else f"── {size} ──")
            if link or len(links) > 1:
                out.append(link_heading(doc, link))
            out.extend(_floor_table(groups))
            out.extend(_main_table(groups))
            out.extend(reads_table(groups))
            out.extend(transfer_table(groups))
            out.extend(_server_table(groups))
            out.extend(_healthz_table(groups))
    out.extend(_headline(doc))
    out.extend(_verdict(doc))
    out.extend(f"Note: {note}" for note in doc["notes"])
    return "\n".join(out)
