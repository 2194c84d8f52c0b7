"""A real PgBouncer (Debian's package) on a free port, for the failures only a pooler produces."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import free_port

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
INSTALLED = Path(PGBOUNCER).exists()
# PgBouncer refuses to run as root.
UNPRIVILEGED_USER = "nobody"


@dataclass
class PgBouncer:
    port: int
    process: subprocess.Popen[bytes]
    directory: Path

    @classmethod
    def start(cls, databases: dict[str, str], within: float = 30) -> PgBouncer:
        """PgBouncer on 127.0.0.1 with these [databases] entries (name = connection string), trusting everyone."""
        directory = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        directory.chmod(0o755)  # readable by the unprivileged user
        port = free_port()
        (directory / "users.txt").write_text('"user" ""\n')
        entries = "\n".join(f"{name} = {spec}" for name, spec in databases.items())
        (directory / "pgbouncer.ini").write_text(
            f"[databases]\n{entries}\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\n"
            f"auth_type = trust\nauth_file = {directory / 'users.txt'}\nunix_socket_dir =\n"
        )
        for path in directory.iterdir():
            path.chmod(0o644)
        run_as = {"user": UNPRIVILEGED_USER, "group": "nogroup", "extra_groups": []} if os.geteuid() == 0 else {}
        process = subprocess.Popen(
            [PGBOUNCER, str(directory / "pgbouncer.ini")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **run_as,
        )
        bouncer = cls(port, process, directory)
        deadline = time.monotonic() + within
        while not bouncer._listening():
            if process.poll() is not None or time.monotonic() > deadline:
                bouncer.stop()
                raise AssertionError(f"PgBouncer did not start (exit {process.poll()})")
            time.sleep(0.05)
        return bouncer

    def _listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def url(self, database: str) -> str:
        return f"postgresql://user:secret-password@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
        shutil.rmtree(self.directory, ignore_errors=True)
