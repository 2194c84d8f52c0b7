"""The command line, run as a user runs it: `python run.py ...` in a subprocess, with its own data directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streaming_api import settings as settings_module
from streaming_api.settings import PROJECT_ROOT
from streaming_api.tokens import load_keys, verify


def _run(args: list[str], data_dir: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("STREAMING_API_") and k != "DATABASE_URL"}
    environ["STREAMING_API_DATA_DIR"] = str(data_dir)
    environ.update({f"STREAMING_API_{name.upper()}": value for name, value in settings.items()})
    return subprocess.run(
        [sys.executable, "run.py", *args],
        cwd=PROJECT_ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_token_command_prints_a_token_that_verifies(tmp_path):
    result = _run(["token", "--sub", "alice", "--ttl", "120"], tmp_path)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    # The command generated the secret in the data directory; the same settings must verify its token.
    claims = verify(load_keys(settings_module.build({"data_dir": str(tmp_path)})), f"JWT {token}")
    assert claims["sub"] == "alice"
    assert claims["exp"] - claims["iat"] == 120


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["seed", "--help"], ["token", "--help"]])
def test_help_exits_zero_and_explains_usage(tmp_path, args):
    result = _run(args, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_bad_setting_stops_with_a_message_naming_it(tmp_path):
    result = _run(["token"], tmp_path, page_size="0")
    assert result.returncode != 0
    assert "page_size" in result.stderr
    assert "Traceback" not in result.stderr
