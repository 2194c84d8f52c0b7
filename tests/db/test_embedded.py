"""The embedded PostgreSQL's lifecycle: the last owner out stops it, however the owners end, and a crash or
stale files left behind never stop the next start. Real servers, real signals."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from streaming_api.db.embedded import EmbeddedPostgres, EmbeddedPostgresError
from tests.support.owner import Owner, alive, postgres_processes
from tests.support.waiting import wait_until

# Stopping takes pg_ctl's fast shutdown: well under a second here; the bound only catches a server left running.
GONE_WITHIN = 30.0


async def _answers(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval("SELECT 42")
    finally:
        await conn.close()


async def _all_gone(data_dir: Path) -> None:
    await wait_until(lambda: postgres_processes(data_dir) == [], GONE_WITHIN, "no postgres or watchdog left")


@pytest.fixture
def embedded(tmp_path: Path):
    started: list[EmbeddedPostgres] = []

    def make(data_dir: Path = tmp_path, **options: object) -> EmbeddedPostgres:
        server = EmbeddedPostgres(data_dir, **options)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()


async def test_the_last_owner_to_stop_stops_the_server(embedded, tmp_path):
    server = embedded()
    assert await _answers(server.start()) == 42
    postmaster = server.postmaster_pid()
    assert server.stop() is True
    assert postmaster is not None and not alive(postmaster)
    await _all_gone(tmp_path)


async def test_a_second_owner_joins_and_the_server_runs_until_both_have_stopped(embedded, tmp_path):
    first, second = embedded(), embedded()
    first.start()
    postmaster = first.postmaster_pid()
    assert await _answers(second.start()) == 42
    assert second.postmaster_pid() == postmaster
    assert first.stop() is False
    assert await _answers(second.url) == 42
    assert second.stop() is True
    assert postmaster is not None and not alive(postmaster)


def test_an_exclusive_owner_refuses_a_server_in_use_with_one_line(embedded):
    embedded().start()
    with pytest.raises(EmbeddedPostgresError) as refused:
        embedded(exclusive=True).start()
    assert "in use by another process" in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGHUP, signal.SIGTERM], ids=lambda s: s.name)
async def test_a_killed_owner_leaves_no_server_running(tmp_path, sig):
    owner = Owner.start(tmp_path)
    assert alive(owner.postmaster)
    owner.process.send_signal(sig)
    assert owner.process.wait(GONE_WITHIN) == -sig
    await wait_until(lambda: not alive(owner.postmaster), GONE_WITHIN, "the postmaster stopped")
    await _all_gone(tmp_path)


async def test_a_killed_owner_leaves_the_server_to_the_owners_still_using_it(embedded, tmp_path):
    killed = Owner.start(tmp_path)
    staying = embedded()
    url = staying.start()
    killed.process.kill()
    killed.process.wait(GONE_WITHIN)
    assert await _answers(url) == 42
    staying.stop()
    assert not alive(killed.postmaster)


async def test_a_killed_watchdog_is_replaced_by_the_next_owner(tmp_path):
    first = Owner.start(tmp_path)
    [watchdog] = [pid for pid in postgres_processes(tmp_path) if _is_watchdog(pid)]
    os.kill(watchdog, signal.SIGKILL)
    await wait_until(lambda: not alive(watchdog), GONE_WITHIN, "the watchdog died")
    second = Owner.start(tmp_path)  # joins, and puts a new watchdog on duty
    for owner in (first, second):
        owner.process.kill()
        owner.process.wait(GONE_WITHIN)
    await wait_until(lambda: not alive(first.postmaster), GONE_WITHIN, "the postmaster stopped")
    await _all_gone(tmp_path)


async def test_the_server_crashing_under_its_owner_leaves_a_clean_stop_and_a_working_next_start(embedded, tmp_path):
    server = embedded()
    server.start()
    crashed = server.postmaster_pid()
    assert crashed is not None
    os.kill(crashed, signal.SIGKILL)
    await wait_until(lambda: not alive(crashed), GONE_WITHIN, "the postmaster died")
    assert server.stop() is False  # nothing to stop, and no error
    again = embedded()
    assert await _answers(again.start()) == 42
    assert again.postmaster_pid() not in (None, crashed)


def test_a_stale_pid_file_naming_an_unrelated_process_neither_blocks_the_start_nor_kills_it(embedded, tmp_path):
    server = embedded()
    server.start()
    server.stop()
    bystander = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        pidfile = server.pgdata / "postmaster.pid"
        pidfile.write_text(f"{bystander.pid}\n{server.pgdata}\n1\n5432\n{server.pgdata}\n\n0 0\nready\n")
        restarted = embedded()
        assert asyncio.run(_answers(restarted.start())) == 42
        restarted.stop()
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()


async def test_the_wheels_stale_pid_list_is_ignored(embedded, tmp_path):
    """The wheel kept owners' pids in .handle_pids.json and never dropped dead ones: that file no longer counts."""
    server = embedded()
    server.start()
    server.stop()
    (server.pgdata / ".handle_pids.json").write_text("[1, 999999]")
    again = embedded()
    again.start()
    postmaster = again.postmaster_pid()
    again.stop()
    assert postmaster is not None and not alive(postmaster)


def _is_watchdog(pid: int) -> bool:
    return b"embedded_watchdog" in Path(f"/proc/{pid}/cmdline").read_bytes()


async def test_owners_started_together_share_one_server(tmp_path):
    owners = await asyncio.gather(*(asyncio.to_thread(Owner.start, tmp_path) for _ in range(3)))
    assert len({owner.postmaster for owner in owners}) == 1
    for owner in owners:
        assert owner.leave() == 0
    await _all_gone(tmp_path)
