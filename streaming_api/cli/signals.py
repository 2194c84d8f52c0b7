"""Run a subcommand's coroutine so that SIGTERM and SIGHUP end it as cleanly as Ctrl+C does.

Python's default for SIGTERM and SIGHUP (a service manager or `timeout` stopping us, the terminal closing)
is to die on the spot: no finally block runs, so a bench's server process and database, or a download's
temporary file, would be left behind. Here either signal cancels the main task instead, every finally
block runs (servers stopped, the embedded database let go, files removed), and run() raises Stopped.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Stopped(Exception):
    """The run was ended by a signal; exit with 128 + its number, as a shell reports a signal."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {self.name}")


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main), with SIGTERM and SIGHUP turned into a cancellation and then Stopped."""
    return asyncio.run(_stoppable(main))


async def _stoppable(main: Coroutine[Any, Any, T]) -> T:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []

    def on_signal(signum: int) -> None:
        if not received:  # a second signal must not cut the clean-up short
            received.append(signum)
            task.cancel()

    for sig in SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await main
    except asyncio.CancelledError:
        if received:
            raise Stopped(received[0]) from None
        raise
    finally:
        for sig in SIGNALS:
            loop.remove_signal_handler(sig)
