"""A real nginx (Debian's package) in front of a test server: the recipe from docs/deployment.md, or the
stock `proxy_pass` alone. Only the scaffolding around the server block is the test's own."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from streaming_api.settings import PROJECT_ROOT

from .processes import free_port

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
DEPLOYMENT_DOC = PROJECT_ROOT / "docs" / "deployment.md"
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def available() -> bool:
    return Path(NGINX).exists()


def recipe() -> str:
    """The nginx configuration in docs/deployment.md (the first ```nginx block)."""
    match = re.search(r"```nginx\n(.*?)```", DEPLOYMENT_DOC.read_text(), re.DOTALL)
    assert match, f"no nginx block in {DEPLOYMENT_DOC}"
    return match.group(1)


def stock(upstream_port: int) -> str:
    """nginx's stock proxying: proxy_pass and nothing else (HTTP/1.0 upstream, buffering on)."""
    return (
        "server {\n    listen 80;\n    location / {\n"
        f"        proxy_pass http://127.0.0.1:{upstream_port};\n"
        "    }\n}\n"
    )


class Nginx:
    """nginx in the foreground with its own prefix, pid file and logs, listening on a free loopback port."""

    def __init__(self, server_block: str, upstream_port: int, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        block = server_block.replace("127.0.0.1:8080", f"127.0.0.1:{upstream_port}")
        block = re.sub(r"listen\s+80;", f"listen 127.0.0.1:{self.port};", block)
        for name in TEMP_PATHS:
            (workdir / name).mkdir(exist_ok=True)
        # As root, run the workers as root too: they write temporary files in the test's private directory.
        user = "user root;\n" if os.geteuid() == 0 else ""
        (workdir / "nginx.conf").write_text(
            f"{user}worker_processes 1;\npid {workdir}/nginx.pid;\nerror_log {workdir}/error.log info;\n"
            "events { worker_connections 512; }\n"
            "http {\n"
            f"    access_log {workdir}/access.log;\n"
            + "".join(
                f"    {name}_temp_path {workdir}/{name};\n"
                for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
            )
            + block
            + "}\n"
        )
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def error_log(self) -> str:
        path = self.workdir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, within: float = 10.0) -> Nginx:
        self.process = subprocess.Popen(
            [NGINX, "-p", str(self.workdir), "-c", str(self.workdir / "nginx.conf"), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + within
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited {self.process.returncode}: {self.process.stderr.read().decode()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx not listening within {within:g} s") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
