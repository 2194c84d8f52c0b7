"""The status line: redrawn in place on a terminal, and never broken by a log line."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator

import pytest

from streaming_api.cli.console import StatusLine


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    """A terminal the root logger also writes to, as stderr is for the command line."""
    screen = Terminal()
    handler = logging.StreamHandler(screen)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield screen
    finally:
        root.removeHandler(handler)


def _screen_lines(written: str) -> list[str]:
    """What a terminal shows: each carriage return starts its line over."""
    lines = []
    for raw in written.split("\n"):
        shown = ""
        for part in raw.split("\r"):
            shown = part + shown[len(part) :]
        lines.append(shown.rstrip())
    return lines


def test_a_log_line_while_the_status_is_shown_starts_on_a_clean_line(terminal):
    line = StatusLine(terminal)
    line.show("bench: chunked ndjson ×1 run 1/5: 12.5 MB in 0.3 s")
    logging.getLogger("streaming_api.test").warning("starting the embedded PostgreSQL")
    line.show("bench: chunked ndjson ×1 run 2/5: 3.1 MB in 0.1 s")
    assert _screen_lines(terminal.getvalue()) == [
        "WARNING starting the embedded PostgreSQL",
        "bench: chunked ndjson ×1 run 2/5: 3.1 MB in 0.1 s",
    ]


def test_off_a_terminal_nothing_is_drawn_and_logs_pass_untouched(terminal):
    line = StatusLine(terminal, enabled=False)
    line.show("status")
    logging.getLogger("streaming_api.test").warning("a log line")
    assert terminal.getvalue() == "WARNING a log line\n"
