"""The pieces every terminal table of the bench is made of: aligned columns, and numbers as it prints them.

Units: milliseconds for times, MB = 1,000,000 bytes for sizes and throughput.
"""

from __future__ import annotations

from typing import Any

from .stats import MB


def num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def mb(nbytes: float | None) -> str:
    return "-" if nbytes is None else f"{nbytes / MB:,.1f}"


def spread_range(spread: dict[str, float | None]) -> str:
    if spread["median"] is None:
        return "-"
    return f"{ms(spread['median'])} ({ms(spread['min'])}–{ms(spread['max'])})"


def endpoint_label(s: dict[str, Any]) -> str:
    """/chunked, or /chunked?page_size=100&snapshot=off&value=gte.0 when the plan sets them."""
    query = [f"page_size={s['page_size']}"] if s.get("page_size") is not None else []
    if s.get("snapshot", "on") == "off":
        query.append("snapshot=off")
    if s.get("filter") is not None:
        query.append(s["filter"])
    return f"/{s['endpoint']}" + ("?" + "&".join(query) if query else "")


def table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    """Rows under a header, one column per cell, the columns in `right` aligned right."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return [line(header).rstrip(), "  ".join("-" * w for w in widths), *(line(r).rstrip() for r in rows)]
