"""Argument types the subcommands share; each error names the value, never an internal name."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def _whole_number(text: str) -> int:
    try:
        return int(text.strip().replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text.strip()!r} is not a whole number") from None


def non_negative(text: str) -> int:
    """A whole number >= 0 (500000, 500_000 and 500,000 alike)."""
    value = _whole_number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative: it must be 0 or more")
    return value


def positive(text: str) -> int:
    """A whole number >= 1."""
    value = _whole_number(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive: it must be 1 or more")
    return value


def positive_list(text: str) -> tuple[int, ...]:
    """Comma-separated whole numbers >= 1, duplicates dropped: 1,8,32."""
    values = []
    for item in text.split(","):
        value = _whole_number(item)
        if value < 1:
            raise argparse.ArgumentTypeError(
                f"{value} is not a positive number (separate values with commas; write 500000 or 500_000 for one)"
            )
        values.append(value)
    return tuple(dict.fromkeys(values))


def names(allowed: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    """Comma-separated names from `allowed`, duplicates dropped."""

    def parse(text: str) -> tuple[str, ...]:
        chosen = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
        unknown = [n for n in chosen if n not in allowed]
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)} (comma-separated), got {text!r}")
        return chosen

    return parse
