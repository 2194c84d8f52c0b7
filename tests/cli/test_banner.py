"""The start-up banner: a live token only for a person at a terminal; in a captured log (a service manager's),
the commands with $TOKEN and the one that mints it."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest

from streaming_api import settings as settings_module
from streaming_api.settings import PROJECT_ROOT
from streaming_api.tokens import load_keys, verify
from tests.support.processes import ServerProcess, free_port
from tests.support.waiting import wait_until

JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
READY_SECONDS = 120


@pytest.mark.parametrize("workers", [1, 2], ids=["one process", "two workers"])
async def test_a_banner_written_to_a_log_holds_no_token_and_says_how_to_mint_one(
    database_url, jwt_secret, tmp_path, workers
):
    settings = {"database_url": database_url, "jwt_secret": jwt_secret, "data_dir": str(tmp_path), "workers": workers}
    server = ServerProcess.start(tmp_path, settings)
    try:
        await server.wait_ready(within=READY_SECONDS)
        await wait_until(lambda: "Press Ctrl+C to stop." in server.log, READY_SECONDS, "the banner")
    finally:
        server.stop()
    assert not JWT.search(server.log)
    assert "  TOKEN=$(python run.py token)" in server.log
    assert f"""curl -sS -H "Authorization: JWT $TOKEN" http://127.0.0.1:{server.port}/chunked | wc -l""" in server.log


def _read_until(fd: int, marker: bytes, within: float) -> bytes:
    """What the terminal shows until `marker`, the process closes it, or `within` seconds pass."""
    seen = b""
    deadline = time.monotonic() + within
    while marker not in seen and select.select([fd], [], [], max(deadline - time.monotonic(), 0))[0]:
        try:
            data = os.read(fd, 4096)
        except OSError:  # EIO: the process closed its terminal
            break
        if not data:
            break
        seen += data
    return seen


def test_a_banner_on_a_terminal_shows_a_token_that_verifies(database_url, jwt_secret, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMING_API_") and k != "DATABASE_URL"}
    env.update(
        STREAMING_API_DATABASE_URL=database_url,
        STREAMING_API_JWT_SECRET=jwt_secret,
        STREAMING_API_DATA_DIR=str(tmp_path),
        STREAMING_API_LOG_LEVEL="WARNING",
    )
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "run.py", "serve", "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=subprocess.DEVNULL,
    )
    os.close(terminal)
    try:
        shown = _read_until(controller, b"Press Ctrl+C to stop.", READY_SECONDS)
    finally:
        process.terminate()
        process.wait(60)
        os.close(controller)
    tokens = set(JWT.findall(shown.decode()))
    assert len(tokens) == 1, shown.decode()
    keys = load_keys(settings_module.build({"jwt_secret": jwt_secret}))
    assert verify(keys, f"JWT {tokens.pop()}")["sub"] == "banner"
