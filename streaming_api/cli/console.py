"""The one progress display every subcommand uses: a status line redrawn in place on a terminal.

seed shows a bar, fetch its rows and MB, bench its stages and runs; all through StatusLine. Off a
terminal it draws nothing (a log or a pipe gets only the lines printed for good). While a line is drawn,
a log record written to the same stream clears it first, so a log line never lands in its middle (the
next redraw puts the status back).
"""

from __future__ import annotations

import logging
import sys
import time
import weakref
from collections.abc import Callable
from typing import TextIO

REDRAW_SECONDS = 0.1
BAR_WIDTH = 30


class _ClearBeforeLogging(logging.Filter):
    """On the log handlers that write where status lines are drawn: clear those lines before each record."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: weakref.WeakSet[StatusLine] = weakref.WeakSet()

    def filter(self, record: logging.LogRecord) -> bool:
        for line in list(self.lines):
            line.clear()
        return True


_CLEAR_BEFORE_LOGGING = _ClearBeforeLogging()


def _keep_logs_off(line: StatusLine) -> None:
    _CLEAR_BEFORE_LOGGING.lines.add(line)
    for handler in logging.getLogger().handlers:
        if getattr(handler, "stream", None) is line.stream and _CLEAR_BEFORE_LOGGING not in handler.filters:
            handler.addFilter(_CLEAR_BEFORE_LOGGING)


class StatusLine:
    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if enabled is None else enabled
        self._width = 0
        self._drawn_at = 0.0

    def show(self, text: str, *, throttle: bool = False) -> None:
        """Redraw the line with `text` (with throttle, at most ten times a second)."""
        if not self.live:
            return
        now = time.perf_counter()
        if throttle and now - self._drawn_at < REDRAW_SECONDS:
            return
        self._drawn_at = now
        _keep_logs_off(self)
        self.stream.write("\r" + text.ljust(self._width))
        self._width = len(text)
        self.stream.flush()

    def clear(self) -> None:
        """Blank the line, so what is printed next starts on a clean line."""
        if self.live and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def print(self, text: str) -> None:
        """A line for good (also off a terminal); the status line, if any, is cleared first."""
        self.clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def finish(self, text: str | None = None) -> None:
        """Leave the last status (or `text`) on screen and move to the next line."""
        if text is not None:
            self.show(text)
        if self.live and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0


def rows_bar(line: StatusLine) -> Callable[[int, int], None] | None:
    """A progress bar for loading `total` rows (seeding); None off a terminal, where it would be noise."""
    if not line.live:
        return None
    started = time.perf_counter()

    def show(done: int, total: int) -> None:
        filled = BAR_WIDTH * done // max(total, 1)
        rate = done / max(time.perf_counter() - started, 1e-9)
        text = f"  [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done:>11,} / {total:,} rows  {rate:,.0f} rows/s"
        if done >= total:
            line.finish(text)
        else:
            line.show(text)

    return show


def transfer_text(rows: int, nbytes: int, seconds: float) -> str:
    """rows, MB and rows/s of a download so far."""
    rate = rows / max(seconds, 1e-9)
    return f"  {rows:>11,} rows  {nbytes / 1e6:>8.1f} MB  {rate:>10,.0f} rows/s"
