"""`run.py fetch`: whole files across dropped connections and a server restart, and its exit codes."""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from streaming_api.cli.fetch import (
    EXIT_GAVE_UP,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_UNAUTHORIZED,
    download_with_progress,
)
from streaming_api.client import GaveUp
from streaming_api.client.download import download
from streaming_api.settings import PROJECT_ROOT
from streaming_api.tokens import load_keys, mint_token
from tests.support.bodies import FORMATS
from tests.support.pg import ROWS
from tests.support.relay import FIRST_CUT, SECOND_CUT, CuttingRelay

# Bounded waits for subprocesses: far above what they take, so only a hang trips them.
PROCESS_DEADLINE_SECONDS = 60


async def _clean_body(server: TestServer, token: str, query: str) -> bytes:
    async with (
        aiohttp.ClientSession() as session,
        session.get(server.make_url(f"/chunked?{query}"), headers={"Authorization": f"JWT {token}"}) as response,
    ):
        assert response.status == 200
        return await response.read()


@pytest.mark.parametrize("compressed", [True, False], ids=["zstd", "identity"])
@pytest.mark.parametrize("fmt", FORMATS)
async def test_download_across_cuts_equals_a_clean_download(server, make_relay, token, tmp_path, fmt, compressed):
    relay = await make_relay(cuts=[FIRST_CUT, SECOND_CUT])
    out = tmp_path / f"points.{fmt}"
    result = await download(relay.url("/chunked"), token, fmt, out, backoff=0, compressed=compressed)
    assert out.read_bytes() == await _clean_body(server, token, f"format={fmt}")
    assert (result.rows, result.retries) == (ROWS, 2)


async def test_download_with_after_id_and_limit_equals_a_clean_download(server, make_relay, token, tmp_path):
    relay = await make_relay(cuts=[FIRST_CUT])
    out = tmp_path / "points.csv"
    await download(relay.url("/chunked"), token, "csv", out, after_id=100, limit=1_500, backoff=0)
    assert out.read_bytes() == await _clean_body(server, token, "format=csv&after_id=100&limit=1500")


@pytest.mark.parametrize("fmt", ["csv", "json"])
async def test_download_of_no_rows_equals_a_clean_download(server, token, tmp_path, fmt):
    out = tmp_path / f"points.{fmt}"
    await download(str(server.make_url("/chunked")), token, fmt, out, after_id=ROWS)
    assert out.read_bytes() == await _clean_body(server, token, f"format={fmt}&after_id={ROWS}")


async def test_download_that_gives_up_leaves_no_file(make_relay, token, tmp_path):
    relay = await make_relay(cuts=[FIRST_CUT], cut_every=0)
    with pytest.raises(GaveUp):
        await download(relay.url("/chunked"), token, "csv", tmp_path / "points.csv", retries=1, backoff=0)
    assert list(tmp_path.iterdir()) == []


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _fetch_args(out: Path) -> argparse.Namespace:
    return argparse.Namespace(
        format="csv",
        out=out,
        limit=None,
        after_id=0,
        after=None,
        page_size=None,
        columns=None,
        retries=5,
        compressed=True,
    )


async def test_download_shows_progress_on_a_terminal(server, token, tmp_path):
    terminal = Terminal()
    await download_with_progress(
        str(server.make_url("/chunked")), token, _fetch_args(tmp_path / "points.csv"), terminal
    )
    assert f"{ROWS:,} rows" in terminal.getvalue()
    assert "rows/s" in terminal.getvalue()


async def test_download_writes_no_progress_when_not_on_a_terminal(server, token, tmp_path):
    messages = io.StringIO()
    await download_with_progress(
        str(server.make_url("/chunked")), token, _fetch_args(tmp_path / "points.csv"), messages
    )
    assert messages.getvalue() == ""


# --- the command line, as a subprocess ----------------------------------------------------------


def _environment(tmp_path: Path, jwt_secret: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMING_API_") and k != "DATABASE_URL"}
    env.update(
        STREAMING_API_JWT_SECRET=jwt_secret,
        STREAMING_API_DATA_DIR=str(tmp_path / "data"),
        STREAMING_API_LOG_LEVEL="WARNING",
        **extra,
    )
    return env


async def _start_fetch(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "run.py",
        "fetch",
        *args,
        cwd=PROJECT_ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def _run_fetch(env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "run.py",
        "fetch",
        *args,
        cwd=PROJECT_ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(PROCESS_DEADLINE_SECONDS):
            _, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def test_fetch_exits_0_with_the_complete_file(server, token, jwt_secret, tmp_path):
    out = tmp_path / "points.csv"
    url = str(server.make_url("/chunked"))
    code, _ = await _run_fetch(_environment(tmp_path, jwt_secret), "--url", url, "--format", "csv", "--out", str(out))
    assert code == EXIT_OK
    assert out.read_bytes() == await _clean_body(server, token, "format=csv")


async def test_fetch_mints_a_token_from_the_settings_when_given_none(server, jwt_secret, tmp_path):
    env = _environment(tmp_path, jwt_secret, STREAMING_API_PORT=str(server.port))
    code, stderr = await _run_fetch(env, "--limit", "10", "--out", str(tmp_path / "points.ndjson"))
    assert code == EXIT_OK, stderr
    assert (tmp_path / "points.ndjson").read_bytes().count(b"\n") == 10


async def test_fetch_exits_3_on_a_refused_token(server, settings, jwt_secret, tmp_path):
    other_key = load_keys(settings.replace(jwt_secret="another secret of at least 32 bytes!!"))
    url = str(server.make_url("/chunked"))
    code, stderr = await _run_fetch(_environment(tmp_path, jwt_secret), "--url", url, "--token", mint_token(other_key))
    assert code == EXIT_UNAUTHORIZED
    assert "bad signature" in stderr


async def test_fetch_exits_4_on_a_bad_request(server, settings, jwt_secret, tmp_path):
    url = str(server.make_url("/chunked"))
    too_big = str(settings.max_page_size + 1)
    code, stderr = await _run_fetch(_environment(tmp_path, jwt_secret), "--url", url, "--page-size", too_big)
    assert code == EXIT_REJECTED
    assert "page_size" in stderr


async def test_fetch_exits_5_when_it_gives_up(make_relay, jwt_secret, tmp_path):
    relay = await make_relay(cut_every=0)
    out = tmp_path / "points.csv"
    env = _environment(tmp_path, jwt_secret)
    code, stderr = await _run_fetch(env, "--url", relay.url("/chunked"), "--retries", "1", "--out", str(out))
    assert code == EXIT_GAVE_UP
    assert "gave up" in stderr
    assert not out.exists()


async def test_fetch_interrupted_says_how_far_it_got_and_leaves_no_file(make_relay, jwt_secret, tmp_path):
    relay = await make_relay(cuts=[FIRST_CUT])
    relay.hold_first_cut = True  # the download stalls mid-body, as a slow one would when Ctrl+C comes
    out = tmp_path / "points.csv"
    process = await _start_fetch(_environment(tmp_path, jwt_secret), "--url", relay.url("/chunked"), "--out", str(out))
    try:
        await _until(relay.holding)
        process.send_signal(signal.SIGINT)
        async with asyncio.timeout(PROCESS_DEADLINE_SECONDS):
            _, stderr = await process.communicate()
    finally:
        relay.release.set()
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == EXIT_INTERRUPTED
    assert "Traceback" not in stderr.decode()
    [line] = stderr.decode().splitlines()
    assert line.startswith("fetch: interrupted after ") and f"{out} not written" in line
    assert list(tmp_path.glob("points.csv*")) == [] and list(tmp_path.glob(".points.csv*")) == []


# --- a server restarted while fetch runs ----------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def _start_server(env: dict[str, str], port: int) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "run.py",
        "serve",
        "--port",
        str(port),
        cwd=PROJECT_ROOT,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(PROCESS_DEADLINE_SECONDS), aiohttp.ClientSession() as session:
        while True:
            assert process.returncode is None, "the server exited during start-up"
            try:
                async with session.get(f"http://127.0.0.1:{port}/healthz") as response:
                    if response.status == 200:
                        return process
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.05)


async def _stop_server(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    async with asyncio.timeout(PROCESS_DEADLINE_SECONDS):
        await process.wait()


async def _until(event: asyncio.Event) -> None:
    async with asyncio.timeout(PROCESS_DEADLINE_SECONDS):
        await event.wait()


async def test_fetch_survives_a_server_restart_mid_download(database_url, server, token, jwt_secret, tmp_path):
    port = _free_port()
    env = _environment(
        tmp_path,
        jwt_secret,
        STREAMING_API_DATABASE_URL=database_url,
        STREAMING_API_ROWS=str(ROWS),
        STREAMING_API_SHUTDOWN_TIMEOUT="1",
    )
    first = await _start_server(env, port)
    servers = [first]
    # The relay holds the first response after FIRST_CUT bytes, so the restart lands mid-body.
    relay = await CuttingRelay(port, cuts=[FIRST_CUT]).start()
    relay.hold_first_cut = True
    out = tmp_path / "points.csv"
    fetch = asyncio.create_task(
        _run_fetch(env, "--url", relay.url("/chunked"), "--format", "csv", "--out", str(out), "--retries", "8")
    )
    try:
        await _until(relay.holding)
        await _stop_server(first)
        relay.release.set()
        # Fetch finds the server down at least once before it comes back.
        await _until(relay.upstream_refused)
        servers.append(await _start_server(env, port))
        code, stderr = await fetch
    finally:
        fetch.cancel()
        for process in servers:
            await _stop_server(process)
        await relay.close()
    assert code == EXIT_OK, stderr
    assert "resumed" in stderr
    assert out.read_bytes() == await _clean_body(server, token, "format=csv")
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".part")] == []
