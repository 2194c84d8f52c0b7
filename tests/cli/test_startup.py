"""Start-up failures, as a user meets them: one line naming the cause and the setting to change, exit 2 for
the configuration and 1 for the environment, never a traceback."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from streaming_api import settings as settings_module
from streaming_api.cli import main
from tests.support.cli import error_lines, run_cli
from tests.support.processes import free_port

PASSWORD = "hunter2-secret"


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port another socket is listening on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def _the_one_line(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    [line] = error_lines(result.stderr)
    return line


def test_a_port_held_by_another_socket_is_one_line_naming_the_address_and_the_setting(
    held_port, database_url, tmp_path
):
    result = run_cli(["serve", "--port", str(held_port)], tmp_path, database_url=database_url, log_level="WARNING")
    assert result.returncode == 1
    line = _the_one_line(result)
    assert f"127.0.0.1:{held_port} is already in use" in line
    assert "--port" in line and "PORT" in line


def test_a_port_held_by_another_socket_stops_the_embedded_database_it_started(held_port, tmp_path):
    result = run_cli(["serve", "--port", str(held_port)], tmp_path, rows="10")
    assert result.returncode == 1
    assert "already in use" in _the_one_line(result)
    assert not (tmp_path / "postgres" / "postmaster.pid").exists()


def test_an_unreachable_database_url_is_one_line_naming_the_setting_and_address_but_not_the_password(tmp_path):
    port = free_port()  # nothing listens there
    url = f"postgresql://someone:{PASSWORD}@127.0.0.1:{port}/points"
    result = run_cli(["serve"], tmp_path, environment={"DATABASE_URL": url})
    assert result.returncode == 1
    line = _the_one_line(result)
    assert f"127.0.0.1:{port}" in line and "DATABASE_URL" in line and "refused" in line
    assert PASSWORD not in result.stderr + result.stdout


def test_a_database_url_with_an_unknown_host_says_so(tmp_path):
    url = f"postgresql://someone:{PASSWORD}@no-such-host.invalid:5432/points"
    result = run_cli(["seed", "--rows", "10"], tmp_path, environment={"DATABASE_URL": url})
    assert result.returncode == 1
    assert "no-such-host.invalid:5432: no such host" in _the_one_line(result)


def test_a_database_that_refuses_the_login_is_one_line_with_its_reason(database_url, tmp_path):
    missing = database_url.replace("/postgres?", "/no_such_database?")
    assert missing != database_url
    result = run_cli(["seed", "--rows", "10"], tmp_path, environment={"DATABASE_URL": missing})
    assert result.returncode == 1
    assert 'database "no_such_database" does not exist' in _the_one_line(result)


def test_a_pooler_refusing_the_database_is_one_line_naming_the_pooler(strict_pgbouncer, tmp_path):
    pgbouncer = strict_pgbouncer
    url = pgbouncer.url("elsewhere", password="secret-password")
    result = run_cli(["seed", "--rows", "10"], tmp_path, environment={"DATABASE_URL": url})
    assert result.returncode == 1
    line = _the_one_line(result)
    assert f"connection pooler (PgBouncer) at 127.0.0.1:{pgbouncer.port}" in line
    assert "no such database: elsewhere" in line
    assert "secret-password" not in result.stderr


# --- settings.py (the project's own file, so these run main() in this process, pointed at a temporary one)


@pytest.fixture
def local_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where main() looks for settings.py during the test (a temporary project root), with its own data dir."""
    monkeypatch.setattr(settings_module, "PROJECT_ROOT", tmp_path)
    for name in [n for n in os.environ if n.startswith("STREAMING_API_") or n == "DATABASE_URL"]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("STREAMING_API_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "settings.py"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("PORT = 80 80\n", "line 1: invalid syntax"),
        ("ROWS = 1000\nPORT = PORT_NUMBER\n", "line 2: NameError: name 'PORT_NUMBER' is not defined"),
    ],
    ids=["syntax-error", "undefined-name"],
)
def test_a_broken_settings_py_is_one_line_naming_its_line_and_exits_2(local_settings, capsys, content, expected):
    local_settings.write_text(content)
    assert main(["token"]) == 2
    printed = capsys.readouterr()
    [line] = printed.err.strip().splitlines()
    assert line.startswith("error: ") and str(local_settings) in line and expected in line
    assert printed.out == ""


def test_a_bad_value_in_settings_py_is_one_line_naming_the_setting_and_exits_2(local_settings, capsys):
    local_settings.write_text("PAGE_SIZE = 0\n")
    assert main(["token"]) == 2
    assert capsys.readouterr().err.startswith("error: setting page_size:")


# --- the user's database: served, never written ---------------------------------------------------


@pytest.fixture
def empty_database(database_url: str) -> Iterator[str]:
    """A database of the user's, without the demo table: what DATABASE_URL points at."""
    import asyncio

    import asyncpg

    from tests.support.pg import _with_database

    async def recreate() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute("DROP DATABASE IF EXISTS users_own WITH (FORCE)")
            await conn.execute("CREATE DATABASE users_own")
        finally:
            await conn.close()

    asyncio.run(recreate())
    yield _with_database(database_url, "users_own")


def _relations(url: str) -> list[str]:
    import asyncio

    import asyncpg

    async def read() -> list[str]:
        conn = await asyncpg.connect(url)
        try:
            return [
                r[0]
                for r in await conn.fetch("SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace")
            ]
        finally:
            await conn.close()

    return asyncio.run(read())


def test_a_missing_table_is_one_line_naming_it_and_the_setting_and_nothing_is_written(empty_database, tmp_path):
    result = run_cli(["serve", "--port", str(free_port())], tmp_path, environment={"DATABASE_URL": empty_database})
    assert result.returncode == 2
    line = _the_one_line(result)
    assert "points: no such table or view" in line and "STREAMING_API_TABLES" in line and "seed" in line
    assert _relations(empty_database) == []  # no table created, nothing seeded


def test_a_missing_table_among_the_tables_setting_is_named(empty_database, tmp_path):
    result = run_cli(
        ["serve", "--port", str(free_port())],
        tmp_path,
        environment={"DATABASE_URL": empty_database},
        tables="public.orders, sales.*",
    )
    assert result.returncode == 2
    assert "public.orders: no such table or view" in _the_one_line(result)


def test_seed_refuses_to_overwrite_a_points_table_of_another_shape(empty_database, tmp_path):
    import asyncio

    import asyncpg

    async def make() -> None:
        conn = await asyncpg.connect(empty_database)
        try:
            await conn.execute(
                "CREATE TABLE points (id int PRIMARY KEY, name text); INSERT INTO points VALUES (1, 'mine')"
            )
        finally:
            await conn.close()

    asyncio.run(make())
    result = run_cli(["seed", "--rows", "10"], tmp_path, environment={"DATABASE_URL": empty_database})
    assert result.returncode == 2
    line = _the_one_line(result)
    assert "not the demo table" in line and "id integer, name text" in line
