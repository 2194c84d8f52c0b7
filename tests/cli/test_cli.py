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


def test_token_command_carries_the_tables_and_the_role_it_is_given(tmp_path):
    result = run_cli(
        ["token", "--tables", 'orders,points,"Odd, name".*', "--role", "analyst", "--ttl", "600"], tmp_path
    )
    assert result.returncode == 0, result.stderr
    claims = verify(load_keys(settings_module.build({"data_dir": str(tmp_path)})), f"JWT {result.stdout.strip()}")
    assert claims["tables"] == ["orders", "points", '"Odd, name".*']
    assert claims["role"] == "analyst"
    assert claims["exp"] - claims["iat"] == 600


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["token", "--tables", '"unclosed'], "--tables: "),
        (["token", "--role", "none"], "--role names no role"),
        (["token", "--role", "r" * 64], "--role is longer than"),
        (["link", "/tables"], "a link opens an export"),
        (["link", "/chunked?sig=x"], "already holds a sig="),
    ],
)
def test_a_bad_grant_or_link_target_is_refused_in_one_line(tmp_path, args, said):
    result = run_cli(args, tmp_path)
    assert result.returncode == 2
    assert said in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["token"], ["serve"], ["--help"]])
def test_a_python_without_the_requirements_is_told_in_one_line_to_activate_the_virtualenv(tmp_path, args):
    # -S: no site-packages, as a python3 outside the virtualenv (none of the requirements installed).
    result = run_cli(args, tmp_path, python_options=("-S",))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and "is not installed" in line
    assert ". .venv/bin/activate" in line and "pip install -r requirements.txt" in line


@pytest.mark.parametrize(
    "args", [["--help"], ["serve", "--help"], ["seed", "--help"], ["token", "--help"], ["link", "--help"]]
)
def test_help_exits_zero_and_explains_usage(tmp_path, args):
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_bad_setting_stops_with_a_message_naming_it(tmp_path):
    result = run_cli(["token"], tmp_path, page_size="0")
    assert result.returncode != 0
    assert "page_size" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["seed", "--rows", "0"], ["token", "--ttl", "0"], ["token", "--ttl", "-5"]])
def test_a_count_below_one_is_refused_in_the_same_words(tmp_path, args):
    result = run_cli(args, tmp_path)
    assert result.returncode == 2
    assert f"{args[-1]} is not positive: it must be 1 or more" in result.stderr


def test_seed_with_the_rows_setting_at_0_refuses_rather_than_empty_the_table(tmp_path):
    result = run_cli(["seed"], tmp_path, rows="0")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: nothing to load: the rows setting is 0; give --rows N (1 or more)"
