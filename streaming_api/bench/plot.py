"""One PNG, three panels: rows received over time, server RSS over time, first byte and total per concurrency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {"chunked": "#1f77b4", "standard": "#d62728"}


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


def plot(doc: dict[str, Any], path: Path) -> None:
    import logging

    import matplotlib

    # Its font cache announces itself at INFO the first time.
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    rows, fmt = _pick(doc)
    groups = {g["endpoint"]: g for g in doc["groups"] if g["rows"] == rows and g["format"] == fmt}
    summaries = {s["endpoint"]: s for s in doc["summary"] if s["rows"] == rows and s["format"] == fmt}
    fig, (rows_ax, rss_ax, level_ax) = plt.subplots(1, 3, figsize=(17, 5.4))
    machine = doc["machine"]
    fig.suptitle(
        f"streaming_api: /standard (buffered) vs /chunked (streamed) — {rows or 0:,} rows as {fmt}, one client; "
        f"{machine['cpu_model'] or 'CPU'}, {machine['logical_cores']} cores, PostgreSQL {machine['postgresql'] or '?'}",
        fontsize=12,
    )

    for endpoint in ("standard", "chunked"):
        group = groups.get(endpoint)
        run = _median_run(group) if group else None
        if run is None:
            continue
        request = run["requests"][0]
        color = COLORS[endpoint]
        timeline = request["timeline"] or []
        times = [0.0] + [point[0] / 1000 for point in timeline]
        received = [0] + [point[2] for point in timeline]
        rows_ax.step(times, received, where="post", color=color, linewidth=2, label=f"/{endpoint}")
        if request["first_byte_ms"] is not None:
            first = request["first_byte_ms"] / 1000
            rows_ax.plot([first], [0], "o", color=color, markersize=7, clip_on=False, zorder=5)
            # Text in the empty triangle under /chunked's line, an arrow to where the first rows arrived.
            rows_ax.annotate(
                f"/{endpoint}: first rows after {request['first_byte_ms']:,.1f} ms",
                (first, 0),
                xytext=(0.22, 0.16) if endpoint == "chunked" else (0.3, 0.06),
                textcoords="axes fraction",
                color=color,
                fontsize=9,
                arrowprops={"arrowstyle": "->", "color": color, "linewidth": 1},
            )
        series = run["rss"].get("series") or []
        if series:
            baseline = "the fresh server" if run["rss"].get("baseline") == "fresh" else "idle"
            rss_ax.plot(
                [t / 1000 for t, _ in series],
                [value / 1e6 for _, value in series],
                color=color,
                linewidth=2,
                label=f"/{endpoint}: peak {(run['rss']['growth_bytes'] or 0) / 1e6:,.1f} MB over {baseline}",
            )
            if run["rss"].get("fresh_bytes"):
                rss_ax.axhline(run["rss"]["fresh_bytes"] / 1e6, color=color, linestyle=":", linewidth=1)

    floor = next((s["floor"] for s in summaries.values() if s.get("floor")), None)
    if floor:
        seconds = floor["total_ms"]["median"] / 1000
        rss_ax.axvline(seconds, color="gray", linestyle="--", linewidth=1, label="PostgreSQL COPY done")
        rows_ax.axvline(
            seconds, color="gray", linestyle="--", linewidth=1, label=f"PostgreSQL COPY {floor['kind']} done"
        )

    rows_ax.set_title("Rows received over time")
    rows_ax.set_xlabel("time since the request was sent (s)")
    rows_ax.set_ylabel("rows received")
    rows_ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    rows_ax.set_xlim(left=0)
    rows_ax.set_ylim(bottom=0)
    rows_ax.grid(alpha=0.3)
    rows_ax.legend(loc="upper left")

    rss_ax.set_title("Server memory during the request")
    rss_ax.set_xlabel("time since the request was sent (s)")
    rss_ax.set_ylabel("server RSS (MB)")
    rss_ax.set_xlim(left=0)
    rss_ax.set_ylim(bottom=0)
    rss_ax.grid(alpha=0.3)
    rss_ax.legend(loc="upper left", fontsize=9, title="dotted: the freshly started server", title_fontsize=8)

    levels = sorted({int(level) for s in summaries.values() for level in s["levels"]})
    positions = {level: index for index, level in enumerate(levels)}
    for endpoint, summary in summaries.items():
        color = COLORS.get(endpoint, "black")
        present = [lv for lv in levels if str(lv) in summary["levels"]]
        xs = [positions[lv] for lv in present]
        first_byte = [summary["levels"][str(lv)]["first_byte_ms"]["median"] for lv in present]
        total = [summary["levels"][str(lv)]["total_ms"]["median"] for lv in present]
        p95 = [summary["levels"][str(lv)]["first_byte_ms"]["p95"] for lv in present]
        level_ax.plot(xs, total, "-o", color=color, linewidth=2, label=f"/{endpoint} total (median)")
        level_ax.plot(xs, first_byte, "--s", color=color, linewidth=1.5, label=f"/{endpoint} first byte (median)")
        level_ax.plot(xs, p95, ":", color=color, linewidth=1, label=f"/{endpoint} first byte (p95)")
    level_ax.set_yscale("log")
    level_ax.set_xticks(range(len(levels)), [str(lv) for lv in levels])
    level_ax.set_title("Per request, by number of concurrent clients")
    level_ax.set_xlabel("concurrent clients")
    level_ax.set_ylabel("time per request (ms, log scale)")
    level_ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.4g}"))
    level_ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    level_ax.grid(alpha=0.3, which="both")
    level_ax.legend(loc="center right", fontsize=8)

    fig.tight_layout(rect=(0, 0, 1, 0.94))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
