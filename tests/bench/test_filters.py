"""bench --filter: a group per filter on both endpoints, its floor PostgreSQL's COPY of the rows it keeps,
every body checked to hold exactly those rows, and the filtered totals against the unfiltered one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from streaming_api.bench.filtering import BadFilter, encoded, pairs
from streaming_api.bench.plan import Group, groups
from streaming_api.bench.results import Options
from streaming_api.bench.verify import Verifier
from streaming_api.client.records import BodyError
from streaming_api.settings import PROJECT_ROOT
from tests.support.scratch import scratch_directory

BENCH_ROWS = 5000
KEEPS_ALL = "value=gte.0"
KEEPS_HALF = "value=lt.50"
KEEPS_TEN = "id=gt.4990&label=like.point-*"


@dataclass(frozen=True)
class BenchRun:
    returncode: int
    stdout: str
    stderr: str
    doc: dict


@pytest.fixture(scope="module")
def filtered_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BenchRun]:
    with scratch_directory(tmp_path_factory, "bench_filters") as tmp:
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        arguments = ["--rows", str(BENCH_ROWS), "--repeat", "1", "--concurrency", "1", "--quiet"]
        arguments += ["--filter", "none", "--filter", KEEPS_ALL, "--filter", KEEPS_HALF, "--filter", KEEPS_TEN]
        arguments += ["--data-dir", str(tmp / "data"), "--json", str(tmp / "bench.json"), "--plot", str(tmp / "b.png")]
        completed = subprocess.run(
            [sys.executable, str(PROJECT_ROOT / "run.py"), "bench", *arguments],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            cwd=PROJECT_ROOT,
        )
        doc = json.loads((tmp / "bench.json").read_text()) if (tmp / "bench.json").exists() else {}
        yield BenchRun(completed.returncode, completed.stdout, completed.stderr, doc)


def test_each_filter_is_a_group_on_both_endpoints_every_body_verified(filtered_run):
    assert filtered_run.returncode == 0, filtered_run.stderr[-2000:]
    assert filtered_run.doc["ok"], filtered_run.doc["failures"]
    found = {(g["endpoint"], g["filter"]) for g in filtered_run.doc["groups"]}
    assert found == {(e, f) for e in ("standard", "chunked") for f in (None, KEEPS_ALL, KEEPS_HALF, KEEPS_TEN)}
    for group in filtered_run.doc["groups"]:
        assert all(r["verified"] for run in group["runs"] for r in run["requests"]), group["path"]


def test_a_filtered_group_asks_for_its_filter_and_expects_the_rows_postgresql_counts(filtered_run):
    by_filter = {g["filter"]: g for g in filtered_run.doc["groups"] if g["endpoint"] == "chunked"}
    assert by_filter[KEEPS_ALL]["kept_rows"] == BENCH_ROWS
    assert 0 < by_filter[KEEPS_HALF]["kept_rows"] < BENCH_ROWS
    assert by_filter[KEEPS_TEN]["kept_rows"] == 10
    assert "&id=gt.4990&label=like.point-%2A" in by_filter[KEEPS_TEN]["path"]
    for where, group in by_filter.items():
        rows = BENCH_ROWS if where is None else group["kept_rows"]
        assert {r["rows"] for run in group["runs"] for r in run["requests"]} == {rows}
        # Its floor: PostgreSQL's own COPY of exactly the rows the filter keeps.
        assert {f["rows"] for f in group["floor_runs"]} == {rows} and all(f["ok"] for f in group["floor_runs"])


def test_the_headline_sets_each_filtered_total_against_the_unfiltered_one_and_its_floor(filtered_run):
    figures = filtered_run.doc["headline"][str(BENCH_ROWS)]["chunked_ndjson_filters"]
    assert [f["filter"] for f in figures] == [KEEPS_ALL, KEEPS_HALF, KEEPS_TEN]
    for kept in figures:
        assert kept["total_over_unfiltered"] > 0 and kept["total_over_floor"] > 0
        assert kept["floor_ratio_over_unfiltered"] > 0
        assert kept["first_byte_ms_1_client_median"] > 0
    assert f"/chunked ndjson ?{KEEPS_HALF}" in filtered_run.stdout
    assert "total ÷ unfiltered total, 1 client" in filtered_run.stdout


@pytest.mark.parametrize(
    ("query", "problem"),
    [("limit=5", "set by the bench"), ("value", "not a query string"), ("a=1&&b", "not a query string")],
)
def test_a_filter_query_the_bench_cannot_use_is_refused(query, problem):
    with pytest.raises(BadFilter, match=problem):
        pairs(query)


def test_a_filter_query_is_carried_percent_encoded_in_every_groups_path():
    assert encoded("label=like.a b*&x=in.(1,2)") == "label=like.a+b%2A&x=in.%281%2C2%29"
    options = Options(formats=("ndjson",), endpoints=("chunked",), filters=(None, "x=gt.1"), page_sizes=(10, 20))
    found = [(g.filter, g.page_size) for g in groups(options, 100)]
    assert found == [(None, 10), (None, 20), ("x=gt.1", 10), ("x=gt.1", 20)]
    assert (
        Group(100, "csv", "standard", "identity", None, filter="x=gt.1").path(7)
        == "/standard?format=csv&limit=7&x=gt.1"
    )


def test_an_unknown_filter_column_stops_the_bench_with_one_line(tmp_path):
    arguments = ["--rows", "100", "--filter", "nothing=eq.1", "--data-dir", str(tmp_path), "--quiet"]
    arguments += ["--endpoints", "chunked", "--concurrency", "1", "--repeat", "1"]
    completed = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "run.py"), "bench", *arguments],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"},
        cwd=PROJECT_ROOT,
    )
    assert completed.returncode == 2
    assert completed.stderr.strip().splitlines()[-1] == "error: --filter: 'nothing' is not a column of public.points"
    assert "Traceback" not in completed.stderr


def test_a_filtered_body_may_skip_keys_but_not_lose_a_row_it_should_hold():
    body = b'{"id":2}\n{"id":5}\n{"id":9}\n'
    verifier = Verifier()
    assert verifier.check("ndjson", body, 3, filtered="id=in.(2,5,9)").rows == 3
    with pytest.raises(BodyError):
        Verifier().check("ndjson", body, 3)  # unfiltered: ids must run 1, 2, 3
    with pytest.raises(BodyError):
        Verifier().check("ndjson", body, 4, filtered="id=in.(2,5,7,9)")
