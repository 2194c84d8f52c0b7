"""The pieces every terminal table of the bench is made of: aligned columns, and numbers as it prints them.

Units: milliseconds for times, MB = 1,000,000 bytes for sizes and throughput.
"""

from __future__ import annotations

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


def table(header: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    """Rows under a header, one column per cell, the columns in `right` aligned right."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    return [line(header).rstrip(), "  ".join("-" * w for w in widths), *(line(r).rstrip() for r in rows)]
