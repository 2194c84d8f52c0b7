"""A process that uses the embedded PostgreSQL, to be killed by a test: `python -m tests.support.owner DATA_DIR`.

It starts (or joins) the server under DATA_DIR/postgres, prints `ready <postmaster pid>` and waits; on
stdin's end it stops cleanly. Also what the tests use to watch the server from outside.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from streaming_api.db.embedded import EmbeddedPostgres
from streaming_api.settings import PROJECT_ROOT
from tests.support.processes import processes_mentioning


@dataclass
class Owner:
    """An owner in a subprocess."""

    process: subprocess.Popen[str]
    postmaster: int

    @classmethod
    def start(cls, data_dir: Path, within: float = 60) -> Owner:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.support.owner", str(data_dir)],
            cwd=PROJECT_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        # readline returns when the owner prints or exits: a bounded wait on the owner itself.
        line = process.stdout.readline()
        if not line.startswith("ready "):
            process.kill()
            raise AssertionError(f"owner did not start (exit {process.wait(within)}): {line!r}")
        return cls(process, int(line.split()[1]))

    def leave(self, within: float = 60) -> int:
        """Let it stop cleanly (stdin closed); its exit code."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        return self.process.wait(within)


def postgres_processes(data_dir: Path) -> list[int]:
    """PostgreSQL processes (postmaster, pg_ctl) and watchdogs still running for data_dir's server."""
    return processes_mentioning(str((data_dir / "postgres").resolve()))


def alive(pid: int) -> bool:
    """Running and not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def main(data_dir: str) -> int:
    server = EmbeddedPostgres(Path(data_dir))
    server.start()
    print(f"ready {server.postmaster_pid()}", flush=True)
    sys.stdin.read()  # until the test closes stdin (or kills us)
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
