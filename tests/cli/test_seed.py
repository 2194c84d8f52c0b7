"""`run.py seed` interrupted mid-COPY: the load is rolled back, the database stopped, exit 130, and nothing
printed but the log: no error line, no traceback."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import asyncpg

from streaming_api.db.postmaster import postmaster_lines
from tests.support.cli import start_cli
from tests.support.owner import postgres_processes
from tests.support.processes import communicate_within
from tests.support.waiting import wait_until

# Seconds of COPY on two cores: the interruption lands in the middle of it.
ROWS = "5000000"
DEADLINE_SECONDS = 120


async def _copy_running(pgdata: Path) -> None:
    """Until the seed's COPY runs on the embedded server (its socket directory is in postmaster.pid)."""
    url = f"postgresql://postgres@/postgres?host={postmaster_lines(pgdata)[4].strip()}"
    conn = await asyncpg.connect(url)
    try:
        async with asyncio.timeout(DEADLINE_SECONDS):
            while True:
                copying = "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'COPY %'"
                if await conn.fetchval(copying):
                    return
                await asyncio.sleep(0.01)
    finally:
        await conn.close()


async def test_ctrl_c_while_seeding_rolls_back_stops_the_database_and_exits_130(tmp_path):
    process = await start_cli(["seed", "--rows", ROWS], tmp_path, stdout=asyncio.subprocess.PIPE, log_level="INFO")
    assert process.stderr is not None
    logged = b""
    async with asyncio.timeout(DEADLINE_SECONDS):
        while b"seeding the points table" not in logged:
            line = await process.stderr.readline()
            assert line, logged.decode()
            logged += line
    await _copy_running(tmp_path / "postgres")
    process.send_signal(signal.SIGINT)
    stdout, stderr = await communicate_within(process, DEADLINE_SECONDS)
    assert process.returncode == 130, stderr.decode()
    assert stdout == b""
    assert "error:" not in stderr.decode() and "Traceback" not in stderr.decode()
    await wait_until(lambda: postgres_processes(tmp_path) == [], 30, "no PostgreSQL left running")
