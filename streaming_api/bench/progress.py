"""What the bench tells whoever watches it while it runs. The command line draws it; tests pass Quiet."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .results import RunResult
    from .wire import Received


class Progress(Protocol):
    def stage(self, text: str) -> None:
        """What the bench is doing now (starting a server, a floor run...)."""

    def link(self, description: dict) -> None:
        """A link was built: description["how"] says how (printed: which kind of link the figures come from)."""

    def seeding(self) -> Callable[[int, int], None] | None:
        """A callback for seeding progress (rows done, rows in all), or None."""

    def run_started(self, label: str, received: list[Received]) -> None:
        """A timed run began; `received` fills as its bytes arrive."""

    def run_finished(self) -> None:
        """Its bytes have all arrived (verification follows)."""

    def run_done(self, label: str, run: RunResult) -> None:
        """The run is verified and its figures known."""


class Quiet:
    """Shows nothing."""

    def stage(self, text: str) -> None:
        pass

    def link(self, description: dict) -> None:
        pass

    def seeding(self) -> Callable[[int, int], None] | None:
        return None

    def run_started(self, label: str, received: list[Received]) -> None:
        pass

    def run_finished(self) -> None:
        pass

    def run_done(self, label: str, run: RunResult) -> None:
        pass
