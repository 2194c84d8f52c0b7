"""A real `python run.py serve` on the embedded PostgreSQL: however it ends (the terminal closed, kill -9), the
database it started does not outlive it; and a second server on the same data directory joins it safely."""

from __future__ import annotations

import signal
from pathlib import Path

import aiohttp

from tests.support.owner import alive, postgres_processes
from tests.support.processes import ServerProcess
from tests.support.waiting import wait_until

ROWS = 1000
READY_WITHIN = 120.0
GONE_WITHIN = 30.0


def _serve(tmp_path: Path, data_dir: Path) -> ServerProcess:
    return ServerProcess.start(tmp_path, {"data_dir": str(data_dir), "rows": ROWS})


def _postmaster(data_dir: Path) -> int:
    return int((data_dir / "postgres" / "postmaster.pid").read_text().split("\n", 1)[0])


async def _healthy(port: int) -> bool:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/healthz") as response:
        return response.status == 200


async def test_sighup_of_the_server_leaves_no_postgres_running(tmp_path):
    data_dir = tmp_path / "data"
    server = _serve(tmp_path, data_dir)
    try:
        await server.wait_ready(within=READY_WITHIN)
        postmaster = _postmaster(data_dir)
        server.process.send_signal(signal.SIGHUP)  # what closing the terminal sends
        server.process.wait(GONE_WITHIN)
        await wait_until(lambda: not alive(postmaster), GONE_WITHIN, "PostgreSQL stopped after the server's SIGHUP")
        await wait_until(lambda: postgres_processes(data_dir) == [], GONE_WITHIN, "no postgres or watchdog left")
    finally:
        server.stop()


async def test_sigkill_of_the_server_leaves_no_postgres_running(tmp_path):
    data_dir = tmp_path / "data"
    server = _serve(tmp_path, data_dir)
    try:
        await server.wait_ready(within=READY_WITHIN)
        postmaster = _postmaster(data_dir)
        server.process.kill()
        assert server.process.wait(GONE_WITHIN) == -signal.SIGKILL
        await wait_until(lambda: not alive(postmaster), GONE_WITHIN, "PostgreSQL stopped after the server's SIGKILL")
        await wait_until(lambda: postgres_processes(data_dir) == [], GONE_WITHIN, "no postgres or watchdog left")
    finally:
        server.stop()


async def test_the_next_start_after_a_sigkill_starts_a_fresh_postgres_and_serves(tmp_path):
    data_dir = tmp_path / "data"
    first = _serve(tmp_path, data_dir)
    try:
        await first.wait_ready(within=READY_WITHIN)
        killed = _postmaster(data_dir)
        first.process.kill()
        first.process.wait(GONE_WITHIN)
    finally:
        first.stop()
    second = _serve(tmp_path, data_dir)
    try:
        await second.wait_ready(within=READY_WITHIN)
        assert _postmaster(data_dir) != killed
    finally:
        second.stop()
    assert second.process.returncode == 0
    assert postgres_processes(data_dir) == []


async def test_a_second_server_on_the_same_data_directory_shares_postgres_until_both_stop(tmp_path):
    data_dir = tmp_path / "data"
    first = _serve(tmp_path, data_dir)
    second = None
    try:
        await first.wait_ready(within=READY_WITHIN)
        second = _serve(tmp_path, data_dir)
        await second.wait_ready(within=READY_WITHIN)
        postmaster = _postmaster(data_dir)
        first.stop()
        assert first.process.returncode == 0
        assert alive(postmaster)
        assert await _healthy(second.port)
        second.stop()
        assert second.process.returncode == 0
        assert not alive(postmaster)
    finally:
        first.stop()
        if second is not None:
            second.stop()
