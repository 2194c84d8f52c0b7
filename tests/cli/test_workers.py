"""`run.py serve --workers 2`: one port served by two processes, started and stopped as one; /metrics
adds up both; a worker that dies is replaced while the other keeps serving; workers whose supervisor is
killed stop, and leave nothing behind."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from pathlib import Path
from urllib.parse import quote

import psutil
import pytest

from streaming_api import settings as settings_module
from streaming_api.cli import metrics_directory
from streaming_api.tokens import load_keys, mint_token
from streaming_api.web.metrics import MULTIPROCESS_DIRECTORY
from tests.support import corpus
from tests.support.pg import ROWS
from tests.support.processes import ServerProcess, listening_addresses
from tests.support.waiting import wait_until

REQUESTS = 40


def _workers(server: ServerProcess) -> list[psutil.Process]:
    """The worker processes (multiprocessing's spawned interpreters; not its resource tracker)."""
    children = psutil.Process(server.process.pid).children()
    return [child for child in children if "spawn_main" in " ".join(child.cmdline())]


async def _get(port: int, path: str, token: str | None = None) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    auth = f"Authorization: JWT {token}\r\n" if token else ""
    # HTTP/1.0: the body comes plain (no chunks) and ends with the connection.
    writer.write(f"GET {path} HTTP/1.0\r\nHost: t\r\n{auth}\r\n".encode())
    answer = await asyncio.wait_for(reader.read(), 30)
    writer.close()
    return int(answer.split(b" ", 2)[1]), answer.partition(b"\r\n\r\n")[2]


def _settings(database_url: str, jwt_secret: str, tmp_path: Path) -> dict[str, object]:
    return {"database_url": database_url, "jwt_secret": jwt_secret, "data_dir": str(tmp_path), "workers": 2}


@pytest.fixture
def two_workers(database_url, jwt_secret, tmp_path):
    settings = _settings(database_url, jwt_secret, tmp_path)
    server = ServerProcess.start(tmp_path, settings)
    token = mint_token(load_keys(settings_module.build(settings)), subject="test", ttl=600)
    try:
        yield server, token
    finally:
        server.stop()


async def _ready(server: ServerProcess) -> None:
    """Until every worker serves: the supervisor's banner comes once they all said so."""
    await server.wait_ready(within=60)
    await wait_until(lambda: "streaming_api: serving" in server.log, 60, "every worker ready")


async def test_two_workers_serve_one_port_and_every_access_line_names_its_worker(two_workers):
    server, token = two_workers
    await _ready(server)
    assert len(_workers(server)) == 2
    results = await asyncio.gather(*(_get(server.port, "/chunked?limit=10", token) for _ in range(REQUESTS)))
    assert all(status == 200 and body.count(b"\n") == 10 for status, body in results)
    await wait_until(lambda: server.log.count("streaming_api.access: GET /chunked") == REQUESTS, 10, "every line")
    served_by = re.findall(r"\[worker (\d)\] streaming_api\.access: GET /chunked", server.log)
    assert set(served_by) == {"1", "2"}, "the kernel spread the connections over both workers"


async def test_metrics_add_up_every_worker_whichever_answers(two_workers):
    server, token = two_workers
    await _ready(server)
    for _ in range(REQUESTS):
        assert (await _get(server.port, "/chunked?limit=7", token))[0] == 200
    scrapes = [(await _get(server.port, "/metrics"))[1] for _ in range(12)]
    totals = {
        float(re.search(rb'streaming_api_rows_sent_total\{endpoint="chunked",format="ndjson"\} (\S+)', scrape).group(1))
        for scrape in scrapes
    }
    assert totals == {REQUESTS * 7.0}
    await wait_until(lambda: len(set(re.findall(r"\[worker (\d)\] .*GET /metrics", server.log))) == 2, 5, "both")


async def test_a_worker_that_dies_is_replaced_and_the_other_keeps_serving(two_workers):
    server, token = two_workers
    await _ready(server)
    victim = _workers(server)[0]
    victim.send_signal(signal.SIGKILL)
    resets = 0
    for _ in range(10):  # served throughout, by the survivor or the replacement
        try:
            status, body = await _get(server.port, "/chunked", token)
        except ConnectionResetError:
            # A connection the kernel had queued on the killed worker's socket goes with it (unless
            # net.ipv4.tcp_migrate_req is on): a client sees a reset and asks again.
            resets += 1
            continue
        assert status == 200 and body.count(b"\n") == ROWS
    assert resets <= 1
    await wait_until(lambda: "starting another" in server.log, 30, "the supervisor replaces the dead worker")
    await wait_until(
        lambda: len(_workers(server)) == 2 and victim.pid not in {w.pid for w in _workers(server)}, 60, "two again"
    )
    assert "exited with status -9" in server.log


async def test_sigterm_drains_every_worker_and_exits_zero(two_workers):
    server, _ = two_workers
    await _ready(server)
    workers = _workers(server)
    server.terminate()
    assert server.process.wait(60) == 0
    assert not [worker for worker in workers if worker.is_running() and worker.status() != psutil.STATUS_ZOMBIE]
    assert "streaming_api: stopped 2 workers" in server.log
    assert server.log.count("stopping (SIGTERM)") == 2


async def test_workers_serve_any_table_as_one_process_does(corpus_url, jwt_secret, tmp_path):
    """The corpus through two workers: every request, whichever worker answers, the same bytes."""
    settings = {
        "database_url": corpus_url,
        "jwt_secret": jwt_secret,
        "data_dir": str(tmp_path),
        "workers": 2,
        "tables": corpus.TABLES,
    }
    server = ServerProcess.start(tmp_path, settings)
    token = mint_token(load_keys(settings_module.build(settings)), subject="test", ttl=600)
    try:
        await _ready(server)
        assert f"serving {len(corpus.TABLES)} tables" in server.log
        path = f"/chunked/{quote(corpus.URL_NAME, safe='')}?format=csv&page_size=2"
        results = await asyncio.gather(*(_get(server.port, path, token) for _ in range(12)))
        assert {status for status, _ in results} == {200}
        assert len({body for _, body in results}) == 1
        assert results[0][1].count(b"\n") > corpus.ROWS
        served_by = re.findall(r"\[worker (\d)\] streaming_api\.access: GET /chunked", server.log)
        assert set(served_by) == {"1", "2"}
    finally:
        server.stop()


def _present(path: str) -> bool:
    return os.path.exists(path)


async def test_workers_whose_supervisor_is_killed_stop_and_leave_nothing_behind(two_workers):
    server, _ = two_workers
    await _ready(server)
    workers = _workers(server)
    metrics = workers[0].environ()[MULTIPROCESS_DIRECTORY]
    assert _present(metrics)
    server.process.kill()
    server.process.wait()
    _, alive = await asyncio.to_thread(psutil.wait_procs, workers, 60)
    assert alive == [], server.log
    assert listening_addresses(server.port) == []
    assert not _present(metrics)
    assert server.log.count(f"the supervisor (pid {server.process.pid}) is gone: stopping") == 2


async def test_the_next_start_removes_the_metrics_directories_nobody_holds_and_keeps_the_others(
    database_url, jwt_secret, tmp_path
):
    temporary = tmp_path / "tmp"
    abandoned, in_use = temporary / "streaming_api-metrics-abandoned", temporary / "streaming_api-metrics-in-use"
    for directory in (abandoned, in_use):
        directory.mkdir(parents=True)
        (directory / metrics_directory.IN_USE).touch()
        (directory / "counter_1234.db").write_bytes(b"figures")
    held = metrics_directory.hold(in_use)  # as a server still running holds its own
    server = ServerProcess.start(
        tmp_path, _settings(database_url, jwt_secret, tmp_path), environment={"TMPDIR": str(temporary)}
    )
    try:
        await _ready(server)
        assert not abandoned.exists()
        assert in_use.is_dir()
    finally:
        server.stop()
    # The server removed its own directory as it stopped; the one held is removed by its last holder.
    assert [p.name for p in temporary.iterdir()] == [in_use.name]
    assert metrics_directory.let_go(in_use, held)
    assert not in_use.exists()
