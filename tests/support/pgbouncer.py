"""A real PgBouncer (Debian's package) in front of the session's PostgreSQL, in its stock configuration but
for what a test needs: transaction pooling, a small pool, and where to listen."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from streaming_api.db.postmaster import PG_OS_USER

from .processes import free_port

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
INSTALLED = Path(PGBOUNCER).exists()


def available() -> bool:
    return INSTALLED


class PgBouncer:
    """`pgbouncer` in the foreground on 127.0.0.1, in front of the database at `database_url`."""

    def __init__(
        self,
        database_url: str,
        workdir: Path,
        pool_size: int = 2,
        pool_mode: str = "transaction",
        databases: tuple[str, ...] | None = None,
    ) -> None:
        """databases: the names PgBouncer knows (each the same name on the server); None: every one."""
        target = urlsplit(database_url)
        self.user = target.username or "postgres"
        self.dbname = target.path.lstrip("/") or "postgres"
        query = parse_qs(target.query)
        host = query.get("host", [target.hostname or "127.0.0.1"])[0]
        server_port = target.port or int(query.get("port", ["5432"])[0])
        self.port = free_port()
        self.workdir = workdir
        self.log_path = workdir / "pgbouncer.log"
        (workdir / "userlist.txt").write_text(f'"{self.user}" ""\n')
        # The databases on the server, as they are named there; nothing else differs from the stock file.
        entries = "".join(
            f"{name} = host={host} port={server_port} dbname={name}\n" for name in databases or ("*",)
        ).replace("dbname=*", "")
        (workdir / "pgbouncer.ini").write_text(
            "[databases]\n" + entries + "[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\n"
            "unix_socket_dir =\n"
            f"auth_type = trust\nauth_file = {workdir / 'userlist.txt'}\n"
            f"pool_mode = {pool_mode}\ndefault_pool_size = {pool_size}\n"
        )
        self.process: subprocess.Popen | None = None

    def url(self, dbname: str | None = None, password: str | None = None) -> str:
        secret = f":{password}" if password else ""
        return f"postgresql://{self.user}{secret}@127.0.0.1:{self.port}/{dbname or self.dbname}"

    def start(self, within: float = 10.0) -> PgBouncer:
        # PgBouncer refuses to run as root: as root, it runs as the embedded PostgreSQL's user.
        as_user = ["-u", PG_OS_USER] if os.geteuid() == 0 else []
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [PGBOUNCER, *as_user, str(self.workdir / "pgbouncer.ini")], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + within
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited {self.process.returncode}: {self.log_path.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"pgbouncer not listening within {within:g} s") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            # SIGTERM: a fast exit (SIGINT would wait for clients in a transaction).
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
