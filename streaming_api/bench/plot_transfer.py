"""The codings and links PNG: one row of panels per link (or loopback) the plan ran over.

(1) rows decodable over time by one client, for /standard and /chunked in each coding; (2) the body's
bytes on the wire over the same time; (3) /chunked by page size (total and first decoded row) when the
plan had page sizes, else total and first decoded row per endpoint and coding. Each panel is drawn by a
function of its own from the bench's JSON document (stats.document); the size and format are the
largest size and the first format, as in bench.plot.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .headline import main_page_size
from .plot import COLORS, ENDPOINTS, _median_run, _pick, _thousands

STYLES = {"identity": "-", "zstd": "--", "gzip": ":"}


def wanted(doc: dict[str, Any]) -> bool:
    """Whether the plan had anything for this picture: a link, a coding besides identity, page sizes."""
    options = doc["options"]
    return bool(
        options.get("links") or options.get("page_sizes") or options.get("encodings", ["identity"]) != ["identity"]
    )


def transfer_path(plot_path: Path) -> Path:
    """Beside the main plot: bench.png -> bench-transfer.png."""
    return plot_path.with_name(f"{plot_path.stem}-transfer{plot_path.suffix or '.png'}")


def _label(endpoint: str, coding: str) -> str:
    return f"/{endpoint} {coding}"


def rows_panel(ax: Any, runs: dict[tuple[str, str], dict[str, Any]], scope: str) -> None:
    """Rows one client could decode over time, per endpoint and coding, the first decoded row marked."""
    from matplotlib.ticker import FuncFormatter

    for (endpoint, coding), run in runs.items():
        request = run["requests"][0]
        color, style = COLORS[endpoint], STYLES.get(coding, "-.")
        timeline = request["timeline"] or []
        times = [0.0] + [point[0] / 1000 for point in timeline]
        received = [0] + [point[2] for point in timeline]
        total = (request["total_ms"] or 0) / 1000
        first = request["first_row_ms"] or 0
        ax.step(
            times,
            received,
            where="post",
            color=color,
            linestyle=style,
            linewidth=2,
            label=f"{_label(endpoint, coding)}: first row {first:,.0f} ms, all {total:,.2f} s",
        )
        if request["first_row_ms"] is not None:
            ax.plot([request["first_row_ms"] / 1000], [0], "o", color=color, markersize=6, clip_on=False, zorder=5)
    ax.set_title(f"Rows decoded over time ({scope})")
    ax.set_xlabel("time since the request was sent (s)")
    ax.set_ylabel("rows decodable by the client")
    ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize=8, title="dot: the first decoded row", title_fontsize=8)


def wire_panel(ax: Any, runs: dict[tuple[str, str], dict[str, Any]]) -> None:
    """The body's bytes as sent (encoded) that had arrived, over the same time."""
    for (endpoint, coding), run in runs.items():
        request = run["requests"][0]
        timeline = request["timeline"] or []
        ax.step(
            [0.0] + [point[0] / 1000 for point in timeline],
            [0.0] + [point[1] / 1e6 for point in timeline],
            where="post",
            color=COLORS[endpoint],
            linestyle=STYLES.get(coding, "-."),
            linewidth=2,
            label=f"{_label(endpoint, coding)}: {(request['encoded_bytes'] or 0) / 1e6:,.1f} MB",
        )
    ax.set_title("Body bytes on the wire (as sent)")
    ax.set_xlabel("time since the request was sent (s)")
    ax.set_ylabel("MB received")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="upper left", fontsize=8)


def page_panel(ax: Any, summaries: list[dict[str, Any]]) -> None:
    """/chunked at one client by ?page_size=: total (blue) and first decoded row (gray), one line style per coding."""
    pages = sorted({s["page_size"] for s in summaries if s["endpoint"] == "chunked" and s["page_size"]})
    for coding in dict.fromkeys(s["coding"] for s in summaries):
        found = {
            s["page_size"]: s["levels"]["1"]
            for s in summaries
            if s["endpoint"] == "chunked" and s["coding"] == coding and s["page_size"] and "1" in s["levels"]
        }
        present = [p for p in pages if p in found]
        total = [found[p]["total_ms"]["median"] for p in present]
        first = [found[p]["first_row_ms"]["median"] for p in present]
        style = STYLES.get(coding, "-.")
        ax.plot(present, total, marker="o", color=COLORS["chunked"], linestyle=style, label=f"{coding}: total")
        ax.plot(present, first, marker="s", color="gray", linestyle=style, label=f"{coding}: first decoded row")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(pages, [f"{p:,}" for p in pages])
    ax.set_title("/chunked by page size, one client (medians)")
    ax.set_xlabel("rows per page (?page_size=)")
    ax.set_ylabel("ms (log scale)")
    ax.grid(alpha=0.3, which="both")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


def coding_panel(ax: Any, summaries: list[dict[str, Any]]) -> None:
    """Total (bars) and first decoded row (black ticks) at one client, per endpoint and coding."""
    bars = [
        s
        for endpoint in ENDPOINTS
        for s in summaries
        if s["endpoint"] == endpoint and s["page_size"] is None and "1" in s["levels"]
    ]
    xs = list(range(len(bars)))
    totals = [s["levels"]["1"]["total_ms"]["median"] or 0 for s in bars]
    firsts = [s["levels"]["1"]["first_row_ms"]["median"] or 0 for s in bars]
    ax.bar(xs, totals, color=[COLORS[s["endpoint"]] for s in bars], alpha=0.75, label="total")
    ax.plot(xs, firsts, "k_", markersize=22, markeredgewidth=2, label="first decoded row")
    for x, total, first in zip(xs, totals, firsts, strict=True):
        ax.annotate(f"{total:,.0f}", (x, total), ha="center", va="bottom", fontsize=8)
        ax.annotate(f"{first:,.0f}", (x, first), xytext=(0, -11), textcoords="offset points", ha="center", fontsize=7)
    ax.set_yscale("log")
    ax.set_xticks(xs, [f"/{s['endpoint']}\n{s['coding']}" for s in bars], fontsize=8)
    ax.set_title("Total and first decoded row, one client (medians)")
    ax.set_ylabel("ms (log scale)")
    ax.grid(alpha=0.3, axis="y", which="both")
    if bars:
        ax.legend(fontsize=8)


def plot_transfer(doc: dict[str, Any], path: Path) -> None:
    """One row of three panels per link (loopback included) for the largest size and the first format."""
    import matplotlib

    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, fmt = _pick(doc)
    links = list(dict.fromkeys(g["link"] for g in doc["groups"]))
    default_page = doc["server"].get("settings", {}).get("page_size")
    fig, axes = plt.subplots(len(links), 3, figsize=(18, 5.4 * len(links)), squeeze=False)
    for (rows_ax, wire_ax, third_ax), link in zip(axes, links, strict=True):
        groups = [g for g in doc["groups"] if g["rows"] == rows and g["format"] == fmt and g["link"] == link]
        summaries = [s for s in doc["summary"] if s["rows"] == rows and s["format"] == fmt and s["link"] == link]
        page = main_page_size([g["page_size"] for g in groups if g["endpoint"] == "chunked"], default_page)
        runs = {
            (g["endpoint"], g["coding"]): run
            for g in groups
            if g["page_size"] == (page if g["endpoint"] == "chunked" else None)
            and g.get("snapshot", "on") == "on"
            and g.get("filter") is None
            and (run := _median_run(g)) is not None
        }
        scope = f"link {link}" if link else "loopback"
        rows_panel(rows_ax, runs, scope)
        wire_panel(wire_ax, runs)
        if any(s["page_size"] for s in summaries):
            page_panel(third_ax, summaries)
        else:
            coding_panel(third_ax, summaries)
    machine = doc["machine"]
    fig.suptitle(
        f"streaming_api: content codings and links — {rows or 0:,} rows as {fmt}, one client; "
        f"{machine['cpu_model'] or 'CPU'}, {machine['logical_cores']} cores",
        fontsize=12,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
