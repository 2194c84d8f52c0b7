"""What the bench shows while it runs: one live line on a terminal, one line per run otherwise."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from .client import Received
    from .runner import RunResult

TICK_SECONDS = 0.25


class Progress:
    def __init__(self, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.live = self.stream.isatty() and not quiet
        self._ticker: asyncio.Task[None] | None = None
        self._width = 0

    def _line(self, text: str) -> None:
        if self.live:
            padded = text.ljust(self._width)
            self._width = len(text)
            self.stream.write(f"\r{padded}")
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def stage(self, text: str) -> None:
        if self.live:
            self._line(text)

    def note(self, text: str) -> None:
        if self.quiet:
            return
        self.clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.live and self._width:
            self.stream.write("\r" + " " * self._width + "\r")
            self.stream.flush()
            self._width = 0

    def seeding(self) -> Callable[[int, int], None] | None:
        if not self.live:
            return None
        self.clear()
        from ..cli import progress_bar

        return progress_bar(self.stream)

    def run_started(self, label: str, received: list[Received]) -> None:
        if not self.live:
            return
        started = time.perf_counter()

        async def tick() -> None:
            # Reads counters the recorders keep anyway; costs the client next to nothing.
            while True:
                nbytes = sum(r.nbytes for r in received)
                self._line(f"{label}: {nbytes / 1e6:,.1f} MB in {time.perf_counter() - started:,.1f} s")
                await asyncio.sleep(TICK_SECONDS)

        self._ticker = asyncio.get_running_loop().create_task(tick())

    def run_finished(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def run_done(self, label: str, run: RunResult) -> None:
        if self.quiet:
            return
        failed = sum(not r.verified for r in run.requests)
        verdict = "verified" if not failed else f"{failed} of {len(run.requests)} FAILED verification"
        text = f"{label}: {run.wall_ms / 1000:,.3f} s, {sum(r.bytes for r in run.requests) / 1e6:,.1f} MB, {verdict}"
        if self.live:
            self._line(text)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    async def aclose(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        self.clear()
