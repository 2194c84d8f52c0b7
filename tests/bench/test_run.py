"""`python run.py bench` end to end at a small size: the server it starts, and a server already running."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from streaming_api.bench.estimate import estimate_seconds
from streaming_api.bench.results import Options
from streaming_api.cli import build_parser, main
from streaming_api.cli.bench import outputs, plan
from streaming_api.settings import PROJECT_ROOT, Settings
from tests.bench.threaded import served_in_a_thread
from tests.support.bodies import ENDPOINTS
from tests.support.pg import ROWS
from tests.support.processes import processes_mentioning
from tests.support.scratch import scratch_directory
from tests.support.waiting import wait_until

BENCH_ROWS = 5000
FORMATS = ("ndjson", "csv", "json", "arrow")
# Generous: the whole run takes about ten seconds on two cores.
BENCH_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class BenchRun:
    returncode: int
    stdout: str
    stderr: str
    doc: dict
    data_dir: Path
    plot: Path


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BenchRun]:
    """One small bench run that starts its own server and database (shared by the tests below)."""
    with scratch_directory(tmp_path_factory, "bench") as tmp:
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        completed = subprocess.run(
            [
                sys.executable,
                str(PROJECT_ROOT / "run.py"),
                "bench",
                "--rows",
                str(BENCH_ROWS),
                "--repeat",
                "1",
                "--concurrency",
                "1,4",
                "--formats",
                ",".join(FORMATS),
                "--healthz-probe",
                "--data-dir",
                str(tmp / "data"),
                "--json",
                str(tmp / "bench.json"),
                "--plot",
                str(tmp / "bench.png"),
            ],
            capture_output=True,
            text=True,
            timeout=BENCH_TIMEOUT_SECONDS,
            env=env,
            cwd=PROJECT_ROOT,
        )
        doc = json.loads((tmp / "bench.json").read_text()) if (tmp / "bench.json").exists() else {}
        yield BenchRun(completed.returncode, completed.stdout, completed.stderr, doc, tmp / "data", tmp / "bench.png")


def _measured(doc: dict) -> list[dict]:
    return [run for group in doc["groups"] for run in group["runs"] if not run["warmup"]]


def test_bench_says_what_it_will_run_and_how_long_that_takes_before_it_starts(bench_run):
    first = bench_run.stderr.splitlines()[0]
    assert first.startswith(
        "bench: points: standard and chunked × ndjson, csv, json, arrow × 5,000 rows, 1, 4 clients, 1 run each:"
    )
    assert "about" in first and "on two cores" in first


def test_bench_exits_zero_and_prints_the_table_with_the_floor(bench_run):
    assert bench_run.returncode == 0, bench_run.stderr[-2000:]
    assert "÷floor" in bench_run.stdout
    assert "COPY (SELECT row_to_json(...)) TO STDOUT" in bench_run.stdout
    assert "Verified: all" in bench_run.stdout


def test_bench_covers_every_endpoint_format_and_level(bench_run):
    groups = {(g["endpoint"], g["format"]) for g in bench_run.doc["groups"]}
    assert groups == {(e, f) for e in ENDPOINTS for f in FORMATS}
    for summary in bench_run.doc["summary"]:
        assert set(summary["levels"]) == {"1", "4"}
        assert summary["levels"]["4"]["requests"] == 4


def test_bench_json_holds_sane_figures_for_every_request(bench_run):
    for group in bench_run.doc["groups"]:
        for run in group["runs"]:
            for request in [] if run["warmup"] else run["requests"]:
                assert request["verified"] and request["error"] is None
                assert request["status"] == 200
                assert request["rows"] == BENCH_ROWS
                assert request["bytes"] > BENCH_ROWS * 20
                assert request["wire_bytes"] >= request["bytes"]
                assert 0 < request["headers_ms"] <= request["first_byte_ms"] <= request["total_ms"]
                assert len(request["sha256"]) == 64
                # /chunked's headers leave with its first page's first bytes, before any statement has ended.
                db = request["server_timing"]["db"]
                assert db > 0 if group["endpoint"] == "standard" else db >= 0


def test_bench_json_holds_the_aggregate_and_cost_figures_of_every_run(bench_run):
    for run in _measured(bench_run.doc):
        assert run["wall_ms"] > 0
        assert run["aggregate_rows_per_s"] > 0
        assert run["aggregate_mb_per_s"] > 0
        assert run["client_cpu_s"] >= 0
        assert run["client_cpu_share"] >= 0
        assert run["server_cpu_s"] is not None
        assert run["postgres_cpu_s"] is not None


def test_bench_measures_server_memory_against_the_fresh_server(bench_run):
    for run in _measured(bench_run.doc):
        rss = run["rss"]
        assert rss["source"] == "psutil"
        assert rss["baseline"] == "fresh"
        assert rss["fresh_bytes"] > 10_000_000
        assert rss["peak_bytes"] >= rss["idle_bytes"]
        assert rss["growth_bytes"] == max(rss["peak_bytes"] - rss["fresh_bytes"], 0)
        assert rss["growth_per_request_bytes"] == rss["growth_bytes"] // run["concurrency"]


def test_bench_keeps_series_for_one_client_runs(bench_run):
    for run in _measured(bench_run.doc):
        request = run["requests"][0]
        if run["concurrency"] == 1:
            assert request["timeline"][-1][1:] == [request["bytes"], BENCH_ROWS]
            assert run["rss"]["series"]
        else:
            assert request["timeline"] is None


def test_bench_server_figures_agree_with_the_client(bench_run):
    for summary in bench_run.doc["summary"]:
        for stats in summary["levels"].values():
            metrics = stats["server_metrics"]
            assert metrics["rows"] == metrics["client_rows"] == stats["requests"] * BENCH_ROWS
            assert metrics["bytes"] == metrics["client_bytes"]
            assert metrics["requests_ok"] == stats["requests"]


def test_bench_measures_the_floor_and_its_ratio(bench_run):
    for summary in bench_run.doc["summary"]:
        floor = summary["floor"]
        assert (
            floor["kind"]
            == {"ndjson": "row_to_json", "json": "row_to_json", "csv": "csv", "arrow": "binary"}[summary["format"]]
        )
        assert floor["rows"] == BENCH_ROWS and floor["ok"]
        assert floor["total_ms"]["median"] > 0
        assert summary["floor_ratio"] == pytest.approx(
            summary["levels"]["1"]["total_ms"]["median"] / floor["total_ms"]["median"]
        )


def test_bench_probes_healthz_while_clients_run_together(bench_run):
    for summary in bench_run.doc["summary"]:
        healthz = summary["levels"]["4"]["healthz_ms"]
        assert healthz["n"] >= 1
        assert healthz["errors"] == 0
        assert 0 < healthz["p50"] <= healthz["p99"] <= healthz["max"]
        assert "healthz_ms" not in summary["levels"]["1"]


def test_bench_json_describes_the_machine_and_the_headline(bench_run):
    machine = bench_run.doc["machine"]
    assert machine["logical_cores"] >= 1
    assert machine["python"] and machine["postgresql"]
    assert machine["memory_bytes"] > 0
    headline = bench_run.doc["headline"][str(BENCH_ROWS)]
    assert headline["top_concurrency"] == 4
    assert headline["chunked_ndjson_total_over_floor"] > 0
    assert headline["chunked_aggregate_rows_per_s_top_over_1_client"] > 0
    assert headline["healthz_p99_ms_during_top_concurrency_chunked"] > 0
    assert bench_run.doc["ok"] is True


def test_bench_measures_arrow_against_its_own_floor_and_against_ndjson(bench_run):
    assert "COPY (SELECT ...) TO STDOUT (FORMAT binary)" in bench_run.stdout
    arrow = bench_run.doc["headline"][str(BENCH_ROWS)]["chunked_arrow"]
    assert arrow["total_over_floor"] > 0 and arrow["total_over_ndjson"] > 0
    assert arrow["first_byte_ms_1_client_median"] > 0
    # pyarrow loads with the first Arrow export, once per process: measured, and kept out of the per-request
    # memory figures.
    loads = {g["format"]: g["format_load_bytes"] for g in bench_run.doc["groups"] if g["endpoint"] == "chunked"}
    assert loads["arrow"] > 20e6 > loads["ndjson"]
    assert "arrow export loaded" in bench_run.stdout


def test_bench_reads_arrow_into_a_table_through_read_table_and_adbc_alternately(bench_run):
    for group in [g for g in bench_run.doc["groups"] if g["format"] == "arrow"]:
        measured = [r for r in group["table_reads"] if not r["warmup"]]
        # One round per repeat, each reader in turn: the service's read last, as each direct read came before it.
        assert [r["reader"] for r in measured][-1] == "read_table"
        assert {r["reader"] for r in measured} >= {"adbc", "read_table"}
        for read in group["table_reads"]:
            assert read["ok"] and read["error"] is None
            assert read["rows"] == BENCH_ROWS and read["total_ms"] > 0
            assert read["postgres_cpu_s"] is not None
        service = [r for r in measured if r["reader"] == "read_table"]
        assert all(r["server_cpu_s"] is not None for r in service)


def test_bench_puts_read_table_over_adbc_in_the_headline_beside_arrow_over_ndjson(bench_run):
    (chunked,) = [s for s in bench_run.doc["summary"] if s["endpoint"] == "chunked" and s["format"] == "arrow"]
    reads = chunked["table_reads"]
    assert reads["adbc"]["over_adbc"] == 1.0
    assert reads["read_table"]["over_adbc"] == pytest.approx(
        reads["read_table"]["total_ms"]["median"] / reads["adbc"]["total_ms"]["median"]
    )
    arrow = bench_run.doc["headline"][str(BENCH_ROWS)]["chunked_arrow"]
    assert arrow["read_table_over_adbc"] == reads["read_table"]["over_adbc"]
    assert arrow["total_over_adbc"] > 0 and arrow["total_over_ndjson"] > 0
    assert "/chunked arrow read_table ÷ ADBC direct (pyarrow.Table)" in bench_run.stdout
    assert "Into a pyarrow.Table" in bench_run.stdout


def test_bench_finds_read_tables_table_equal_to_adbcs_on_points(bench_run):
    for group in [g for g in bench_run.doc["groups"] if g["format"] == "arrow"]:
        compared = group["schemas"]["adbc"]
        assert compared["same_names"] and compared["type_differences"] == []
        assert compared["columns_with_other_values"] == []
        assert compared["columns_compared"] == 6
        assert compared["rows"] == [BENCH_ROWS, BENCH_ROWS]
    assert "/chunked against adbc: the same types; the same values in all 6 columns" in bench_run.stdout


def test_bench_draws_the_plot(bench_run):
    assert bench_run.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_leaves_no_server_or_database_running(bench_run):
    assert not (bench_run.data_dir / "postgres" / "postmaster.pid").exists()
    assert "streaming_api: serving" in (bench_run.data_dir / "server.log").read_text()


def test_by_default_the_bench_runs_the_quick_plan_and_writes_its_outputs_into_its_data_dir(tmp_path):
    args = build_parser().parse_args(["bench"])
    assert plan(args) == {"formats": ("ndjson",), "concurrency": (1, 8), "repeat": 3}
    assert outputs(args, tmp_path) == (tmp_path / "bench.json", tmp_path / "bench.png")


def test_the_quick_plan_is_estimated_at_about_a_minute_and_the_full_one_at_many():
    quick = Options(**plan(build_parser().parse_args(["bench"])))
    full = Options(**plan(build_parser().parse_args(["bench", "--full"])))
    assert 30 <= estimate_seconds(quick) <= 90
    assert estimate_seconds(full) >= 10 * estimate_seconds(quick)


def test_options_given_win_over_the_full_plan():
    args = build_parser().parse_args(["bench", "--full", "--formats", "csv", "--repeat", "2"])
    assert plan(args) == {"formats": ("csv",), "concurrency": (1, 8, 32), "repeat": 2}


async def test_sigterm_stops_the_bench_with_its_server_and_database(tmp_path):
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("STREAMING_API_")}
    process = await asyncio.create_subprocess_exec(
        *[sys.executable, "run.py", "bench", "--rows", "5000", "--repeat", "50", "--data-dir", str(data_dir)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        server_log = data_dir / "server.log"
        await wait_until(
            lambda: server_log.exists() and "streaming_api: serving" in server_log.read_text(),
            BENCH_TIMEOUT_SECONDS,
            "the bench's server is serving",
        )
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(BENCH_TIMEOUT_SECONDS):
            _, raw_stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    stderr = raw_stderr.decode()
    # Stopped by the bench itself on its way out (the watchdog would only get to it after the exit).
    assert not (data_dir / "postgres" / "postmaster.pid").exists()
    assert process.returncode == 128 + signal.SIGTERM
    assert "bench: stopped by SIGTERM; its server and database are stopped" in stderr
    assert "Traceback" not in stderr
    await wait_until(lambda: processes_mentioning(str(data_dir)) == [], 30, "no server, postgres or watchdog left")


# --- against a server that is already running -------------------------------------------------------


@pytest.fixture
def running_server(settings: Settings) -> Iterator[str]:
    with served_in_a_thread(settings) as url:
        yield url


def _bench_args(url: str, token: str, rows: int, *extra: str) -> list[str]:
    return ["bench", "--url", url, "--token", token, "--rows", str(rows), "--repeat", "1", "--quiet", *extra]


def test_bench_against_a_running_server_reads_its_memory_from_metrics(
    running_server, token, database_url, tmp_path, capsys
):
    out = tmp_path / "remote.json"
    args = _bench_args(running_server, token, ROWS - 345, "--concurrency", "1,2", "--formats", "csv")
    code = main([*args, "--database-url", database_url, "--json", str(out)])
    doc = json.loads(out.read_text())
    assert code == 0, capsys.readouterr().out[-2000:]
    assert doc["server"]["owned"] is False
    assert {run["rss"]["source"] for run in _measured(doc)} == {"/metrics"}
    assert all(s["floor"]["rows"] == ROWS - 345 for s in doc["summary"])


def test_bench_fails_loudly_when_bodies_hold_fewer_rows_than_asked(running_server, token, capsys):
    code = main(_bench_args(running_server, token, ROWS + 1, "--concurrency", "1", "--formats", "ndjson"))
    printed = capsys.readouterr()
    assert code == 1
    assert "VERIFICATION FAILED" in printed.out
    assert f"{ROWS} rows, expected {ROWS + 1}" in printed.out
    assert "FAILED verification" in printed.err


def test_bench_without_matplotlib_skips_the_plot_with_a_one_line_note(
    running_server, token, tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as the light install (requirements.txt) has it
    plot = tmp_path / "bench.png"
    args = _bench_args(running_server, token, 100, "--concurrency", "1", "--formats", "ndjson", "--plot", str(plot))
    code = main([*args, "--json", str(tmp_path / "bench.json")])
    printed = capsys.readouterr()
    assert code == 0, printed.out[-2000:]
    assert "Plot: skipped (matplotlib is not installed: pip install 'streaming_api[bench]')" in printed.out.splitlines()
    assert not plot.exists()
