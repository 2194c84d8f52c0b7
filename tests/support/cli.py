"""`python run.py ...` run as a user runs it, in a subprocess with its own data directory."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from streaming_api.settings import PROJECT_ROOT


def run_cli(
    args: list[str],
    data_dir: Path,
    environment: dict[str, str] | None = None,
    *,
    python_options: tuple[str, ...] = (),
    **settings: str,
) -> subprocess.CompletedProcess[str]:
    """Run the command line with settings given as STREAMING_API_<NAME> (and any `environment` variables);
    python_options go to the interpreter, before run.py."""
    return subprocess.run(
        [sys.executable, *python_options, "run.py", *args],
        cwd=PROJECT_ROOT,
        env=_environment(data_dir, environment, settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def start_cli(
    args: list[str], data_dir: Path, *, cwd: Path = PROJECT_ROOT, stdout: int | None = None, **settings: str
) -> asyncio.subprocess.Process:
    """Start the command line (to signal it, or read it as it runs): its stderr piped, its stdout `stdout`
    (a pipe's end, say; by default discarded), settings as run_cli takes them."""
    return await asyncio.create_subprocess_exec(
        *[sys.executable, str(PROJECT_ROOT / "run.py"), *args],
        cwd=cwd,
        env=_environment(data_dir, None, settings),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL if stdout is None else stdout,
        stderr=asyncio.subprocess.PIPE,
    )


def _environment(data_dir: Path, environment: dict[str, str] | None, settings: dict[str, str]) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAMING_API_") and k != "DATABASE_URL"}
    environ["STREAMING_API_DATA_DIR"] = str(data_dir)
    environ.update({f"STREAMING_API_{name.upper()}": value for name, value in settings.items()})
    environ.update(environment or {})
    return environ


def error_lines(stderr: str) -> list[str]:
    """The lines a failure printed for the user (log lines, if any, left out)."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]
