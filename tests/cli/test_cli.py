"""The command line, run as a user runs it: `python run.py ...` in a subprocess, with its own data directory."""

from __future__ import annotations

import pytest

from streaming_api import settings as settings_module
from streaming_api.tokens import load_keys, verify
from tests.support.cli import run_cli


def test_token_command_prints_a_token_that_verifies(tmp_path):
    result = run_cli(["token", "--sub", "alice", "--ttl", "120"], tmp_path)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    # The command generated the secret in the data directory; the same settings must verify its token.
    claims = verify(load_keys(settings_module.build({"data_dir": str(tmp_path)})), f"JWT {token}")
    assert claims["sub"] == "alice"
    assert claims["exp"] - claims["iat"] == 120


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["seed", "--help"], ["token", "--help"]])
def test_help_exits_zero_and_explains_usage(tmp_path, args):
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_bad_setting_stops_with_a_message_naming_it(tmp_path):
    result = run_cli(["token"], tmp_path, page_size="0")
    assert result.returncode != 0
    assert "page_size" in result.stderr
    assert "Traceback" not in result.stderr
