"""`python run.py ...` run as a user runs it, in a subprocess with its own data directory."""

from __future__ import annotations

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
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAMING_API_") and k != "DATABASE_URL"}
    environ["STREAMING_API_DATA_DIR"] = str(data_dir)
    environ.update({f"STREAMING_API_{name.upper()}": value for name, value in settings.items()})
    environ.update(environment or {})
    return subprocess.run(
        [sys.executable, *python_options, "run.py", *args],
        cwd=PROJECT_ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def error_lines(stderr: str) -> list[str]:
    """The lines a failure printed for the user (log lines, if any, left out)."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]
