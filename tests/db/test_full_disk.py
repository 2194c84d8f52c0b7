"""A disk that fills during the first seed: PostgreSQL PANICs (it cannot write its WAL) and the connection
drops mid-COPY. The command ends at once with one line: where there is no space, what was left, how to retry;
and nothing of the database runs on."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.cli import error_lines, run_cli
from tests.support.owner import postgres_processes
from tests.support.processes import free_port
from tests.support.smallfs import small_filesystem
from tests.support.waiting import wait_until

# Room for the empty database (about 40 MB) but not for these rows (about 155 MB).
FILESYSTEM_KILOBYTES = 64 * 1024
ROWS = "500000"


@pytest.mark.parametrize(
    "command", [["seed", "--rows", ROWS], ["serve", "--port", str(free_port())]], ids=["seed", "serve"]
)
async def test_a_disk_that_fills_while_seeding_is_one_line_saying_where_what_was_left_and_how_to_retry(
    tmp_path, command
):
    with small_filesystem(tmp_path / "small", FILESYSTEM_KILOBYTES) as small:
        data_dir = small / "data"
        # run_cli's own time limit turns a hang (the bug: 90-200 s) into a failure.
        result = await asyncio.to_thread(run_cli, command, data_dir, rows=ROWS, log_level="WARNING")
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        [line] = error_lines(result.stderr)
        pgdata = data_dir / "postgres"
        assert line.startswith(f"error: no space left on {small} while seeding 500,000 rows")
        assert "the points table is as it was" in line
        assert "set DATA_DIR to a larger disk" in line and "run the command again" in line
        assert f"delete {pgdata}" in line
        await wait_until(lambda: postgres_processes(data_dir) == [], 30, "no PostgreSQL left running on the disk")
