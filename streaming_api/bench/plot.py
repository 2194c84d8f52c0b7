"""One PNG, three panels: rows received over time, server RSS over time, first byte and total per concurrency.

Each panel is drawn by a function of its own from the bench's JSON document (stats.document).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from .headline import main_page_size

COLORS = {"chunked": "#1f77b4", "standard": "#d62728"}
ENDPOINTS = ("standard", "chunked")


def _median_run(group: dict[str, Any]) -> dict[str, Any] | None:
    """The measured one-client run whose total time is the median one (the typical run, not the best)."""
    runs = [r for r in group["runs"] if r["concurrency"] == 1 and not r["warmup"] and r["requests"][0]["verified"]]
    if not runs:
        return None
    runs.sort(key=lambda r: r["requests"][0]["total_ms"])
    return runs[(len(runs) - 1) // 2]


def _pick(doc: dict[str, Any]) -> tuple[int | None, str]:
    """The largest size, and the first format asked for: the panels show one size and format."""
    sizes = [g["rows"] for g in doc["groups"] if g["rows"] is not None]
    rows = max(sizes) if sizes else None
    return rows, doc["options"]["formats"][0]


def _thousands(value: float, _: object) -> str:
    return f"{value:,.0f}"


def rows_panel(ax: Any, runs: dict[str, dict[str, Any]], floor: dict[str, Any] | None) -> None:
    """Rows one client received over time, per endpoint, with the first rows marked and the floor's finish."""
    from matplotlib.ticker import FuncFormatter

    for endpoint, run in runs.items():
        request = run["requests"][0]
        color = COLORS[endpoint]
        timeline = request["timeline"] or []
        times = [0.0] + [point[0] / 1000 for point in timeline]
        received = [0] + [point[2] for point in timeline]
        ax.step(times, received, where="post", color=color, linewidth=2, label=f"/{endpoint}")
        if request["first_byte_ms"] is not None:
            first = request["first_byte_ms"] / 1000
            ax.plot([first], [0], "o", color=color, markersize=7, clip_on=False, zorder=5)
            # Text in the empty triangle under /chunked's line, an arrow to where the first rows arrived.
            ax.annotate(
                f"/{endpoint}: first rows after {request['first_byte_ms']:,.1f} ms",
                (first, 0),
                xytext=(0.22, 0.16) if endpoint == "chunked" else (0.3, 0.06),
                textcoords="axes fraction",
                color=color,
                fontsize=9,
                arrowprops={"arrowstyle": "->", "color": color, "linewidth": 1},
            )
    if floor:
        done = floor["total_ms"]["median"] / 1000
        ax.axvline(done, color="gray", linestyle="--", linewidth=1, label=f"PostgreSQL COPY {floor['kind']} done")
    ax.set_title("Rows received over time")
    ax.set_xlabel("time since the request was sent (s)")
    ax.set_ylabel("rows received")
    ax.yaxis.set_major_formatter(FuncFormatter(_thousands))
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # nothing verified, nothing drawn
        ax.legend(loc="upper left")


def memory_panel(ax: Any, runs: dict[str, dict[str, Any]], floor: dict[str, Any] | None) -> None:
    """The server's RSS over the same requests, with the freshly started server's as a dotted line."""
    for endpoint, run in runs.items():
        color = COLORS[endpoint]
        series = run["rss"].get("series") or []
        if not series:
            continue
        baseline = "the fresh server" if run["rss"].get("baseline") == "fresh" else "idle"
        ax.plot(
            [t / 1000 for t, _ in series],
            [value / 1e6 for _, value in series],
            color=color,
            linewidth=2,
            label=f"/{endpoint}: peak {(run['rss']['growth_bytes'] or 0) / 1e6:,.1f} MB over {baseline}",
        )
        if run["rss"].get("fresh_bytes"):
            ax.axhline(run["rss"]["fresh_bytes"] / 1e6, color=color, linestyle=":", linewidth=1)
    if floor:
        ax.axvline(
            floor["total_ms"]["median"] / 1000, color="gray", linestyle="--", linewidth=1, label="PostgreSQL COPY done"
        )
    ax.set_title("Server memory during the request")
    ax.set_xlabel("time since the request was sent (s)")
    ax.set_ylabel("server RSS (MB)")
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:  # against --url there is no memory series to label
        ax.legend(loc="upper left", fontsize=9, title="dotted: the freshly started server", title_fontsize=8)


def levels_panel(ax: Any, summaries: dict[str, dict[str, Any]]) -> None:
    """First byte (median, p95) and total (median) per request at each concurrency level, log scale."""
    from matplotlib.ticker import FuncFormatter

    levels = sorted({int(level) for s in summaries.values() for level in s["levels"]})
    positions = {level: index for index, level in enumerate(levels)}
    for endpoint, summary in summaries.items():
        color = COLORS.get(endpoint, "black")
        present = [lv for lv in levels if str(lv) in summary["levels"]]
        xs = [positions[lv] for lv in present]
        first_byte = [summary["levels"][str(lv)]["first_byte_ms"]["median"] for lv in present]
        total = [summary["levels"][str(lv)]["total_ms"]["median"] for lv in present]
        p95 = [summary["levels"][str(lv)]["first_byte_ms"]["p95"] for lv in present]
        ax.plot(xs, total, "-o", color=color, linewidth=2, label=f"/{endpoint} total (median)")
        ax.plot(xs, first_byte, "--s", color=color, linewidth=1.5, label=f"/{endpoint} first byte (median)")
        ax.plot(xs, p95, ":", color=color, linewidth=1, label=f"/{endpoint} first byte (p95)")
    ax.set_yscale("log")
    ax.set_xticks(range(len(levels)), [str(lv) for lv in levels])
    ax.set_title("Per request, by number of concurrent clients")
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("time per request (ms, log scale)")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.4g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="center right", fontsize=8)


def plot(doc: dict[str, Any], path: Path) -> None:
    """Draw the three panels for the largest size and the first format into `path`."""
    import matplotlib

    # Its font cache announces itself at INFO the first time.
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, fmt = _pick(doc)

    first = doc["groups"][0] if doc["groups"] else {}
    pages = [g.get("page_size") for g in doc["groups"] if g["endpoint"] == "chunked"]
    page = main_page_size(pages, doc["server"].get("settings", {}).get("page_size"))

    def chosen(g: dict[str, Any]) -> bool:
        # One series per endpoint: the first link (loopback when it ran), the first coding, one page size.
        return (
            g["rows"] == rows
            and g["format"] == fmt
            and g.get("link") == first.get("link")
            and g.get("coding", "identity") == first.get("coding", "identity")
            and g.get("page_size") == (page if g["endpoint"] == "chunked" else None)
            and g.get("snapshot", "on") == "on"
            and g.get("filter") is None
        )

    groups = {g["endpoint"]: g for g in doc["groups"] if chosen(g)}
    summaries = {s["endpoint"]: s for s in doc["summary"] if chosen(s)}
    runs = {e: run for e in ENDPOINTS if e in groups and (run := _median_run(groups[e])) is not None}
    floor = next((s["floor"] for s in summaries.values() if s.get("floor")), None)

    fig, (rows_ax, rss_ax, level_ax) = plt.subplots(1, 3, figsize=(17, 5.4))
    machine = doc["machine"]
    fig.suptitle(
        f"streaming_api: /standard (buffered) vs /chunked (streamed) — {rows or 0:,} rows as {fmt}, one client; "
        f"{machine['cpu_model'] or 'CPU'}, {machine['logical_cores']} cores, PostgreSQL {machine['postgresql'] or '?'}",
        fontsize=12,
    )
    rows_panel(rows_ax, runs, floor)
    memory_panel(rss_ax, runs, floor)
    levels_panel(level_ax, summaries)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
