"""`python run.py bench` over a shaped link, with content codings and page sizes, end to end at a small size."""

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

from streaming_api.bench.link import kernel_shaping_available
from streaming_api.settings import PROJECT_ROOT
from tests.bench.test_link import namespaces, relays_of
from tests.support.scratch import scratch_directory
from tests.support.waiting import wait_until

ROWS = 3000
LINK = "100mbit,20ms"
PAGE_SIZES = (100, 1000)
CODINGS = ("identity", "zstd")
BENCH_TIMEOUT_SECONDS = 300
SHAPER = "tbf" if kernel_shaping_available() is None else "relay"


@dataclass(frozen=True)
class LinkRun:
    returncode: int
    stdout: str
    stderr: str
    doc: dict
    tmp: Path
    pid: int


def _bench(tmp: Path, *args: str) -> LinkRun:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("STREAMING_API_")}
    command = [sys.executable, str(PROJECT_ROOT / "run.py"), "bench", "--rows", str(ROWS), "--repeat", "1"]
    command += ["--data-dir", str(tmp / "data"), "--json", str(tmp / "bench.json"), "--plot", str(tmp / "bench.png")]
    process = subprocess.Popen(
        [*command, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=PROJECT_ROOT
    )
    stdout, stderr = process.communicate(timeout=BENCH_TIMEOUT_SECONDS)
    doc = json.loads((tmp / "bench.json").read_text()) if (tmp / "bench.json").exists() else {}
    return LinkRun(process.returncode, stdout, stderr, doc, tmp, process.pid)


@pytest.fixture(scope="module")
def link_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LinkRun]:
    """Both endpoints over a 100 Mbit/s, 20 ms link, identity and zstd, /chunked at two page sizes."""
    with scratch_directory(tmp_path_factory, "bench-link") as tmp:
        yield _bench(
            tmp,
            *("--link", LINK, "--encodings", ",".join(CODINGS), "--page-sizes", ",".join(map(str, PAGE_SIZES))),
            *("--concurrency", "1,2", "--healthz-probe", "--quiet"),
        )


def _measured(doc: dict) -> list[dict]:
    return [run for group in doc["groups"] for run in group["runs"] if not run["warmup"]]


def test_the_shaped_link_bench_runs_end_to_end_and_verifies_every_body(link_run):
    assert link_run.returncode == 0, link_run.stderr[-2000:]
    assert link_run.doc["ok"] is True
    assert "Verified: all" in link_run.stdout


def test_the_link_used_is_printed_and_recorded(link_run):
    (link,) = link_run.doc["links"]
    assert (link["label"], link["shaper"]) == (LINK, SHAPER)
    assert f"bench: link {LINK}: {link['how']}" in link_run.stderr
    assert f"── {ROWS:,} rows over {LINK} ──" in link_run.stdout


def test_every_coding_and_page_size_has_its_group(link_run):
    groups = {(g["endpoint"], g["coding"], g["page_size"], g["link"]) for g in link_run.doc["groups"]}
    expected = {("standard", c, None, LINK) for c in CODINGS} | {
        ("chunked", c, p, LINK) for c in CODINGS for p in PAGE_SIZES
    }
    assert groups == expected


def test_the_page_size_reaches_the_server(link_run):
    paths = {g["path"] for g in link_run.doc["groups"] if g["endpoint"] == "chunked"}
    assert paths == {f"/chunked/points?format=ndjson&page_size={p}" for p in PAGE_SIZES}


def test_coded_bodies_come_coded_and_decode_to_the_identity_body(link_run):
    by_coding: dict[str, set[str]] = {}
    for group in link_run.doc["groups"]:
        for run in group["runs"]:
            for request in run["requests"]:
                assert request["coding"] == group["coding"]
                by_coding.setdefault(group["coding"], set()).add(request["sha256"])
                if group["coding"] == "identity":
                    assert request["encoded_bytes"] == request["bytes"]
                else:
                    assert request["encoded_bytes"] < request["bytes"]
    assert by_coding["zstd"] == by_coding["identity"]
    assert len(by_coding["identity"]) == 1


def test_the_first_decoded_row_comes_after_the_first_byte_and_before_the_last(link_run):
    for run in _measured(link_run.doc):
        for request in run["requests"]:
            assert request["first_byte_ms"] <= request["first_row_ms"] <= request["total_ms"]


def test_the_round_trip_shows_in_every_first_byte(link_run):
    # A lower bound, not a timing: the request and its first byte each wait half the round trip.
    for run in _measured(link_run.doc):
        for request in run["requests"]:
            assert request["first_byte_ms"] >= 20.0


def test_the_summary_has_the_transfer_figures(link_run):
    for summary in link_run.doc["summary"]:
        one = summary["levels"]["1"]
        assert one["first_row_ms"]["median"] > 0
        assert one["encoded_bytes"] > 0
        if summary["coding"] == "identity":
            assert one["compression_ratio"] == pytest.approx(1.0)
        else:
            assert one["compression_ratio"] > 3
        assert one["server_cpu_ms_per_export"]["median"] is not None
    assert "What crossed the wire and when" in link_run.stdout


def test_the_headline_compares_codings_over_the_link(link_run):
    figures = link_run.doc["headline"][f"{ROWS} over {LINK}"]
    assert figures["chunked_page_size"] == 1000
    assert figures["chunked_ndjson_zstd_total_over_identity"] > 0
    assert figures["chunked_ndjson_zstd"]["compression_ratio"] > 1
    assert figures["chunked_ndjson_zstd"]["healthz_p99_ms_top_concurrency"] > 0
    assert figures["chunked_ndjson_zstd"]["rss_growth_mb_per_request_max"] is not None


def test_the_meters_do_not_cross_the_link(link_run):
    # /healthz answered on the server's side of the link, beside the streams: every probe answered.
    for run in _measured(link_run.doc):
        if run["concurrency"] > 1:
            assert run["healthz"]["errors"] == 0 and run["healthz"]["latencies_ms"]
            assert run["server_metrics"]["requests_ok"] == run["concurrency"]


def test_the_codings_and_links_plot_is_drawn(link_run):
    assert (link_run.tmp / "bench-transfer.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_link_is_torn_down(link_run):
    if SHAPER == "tbf":
        assert not [name for name in namespaces() if name.startswith(f"sabench-{link_run.pid}-")]
    assert relays_of(link_run.pid) == []


def test_the_relay_alone_shapes_a_link_too(tmp_path):
    # One group, kept short: /chunked in gzip at one client.
    run = _bench(
        tmp_path,
        *("--link", "50mbit,10ms", "--shaper", "relay", "--endpoints", "chunked", "--encodings", "gzip"),
        *("--concurrency", "1", "--quiet"),
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.doc["links"][0]["shaper"] == "relay"
    assert "a user-space relay on 127.0.0.1" in run.stderr


def test_a_link_is_refused_with_a_server_at_url(tmp_path):
    completed = subprocess.run(
        [sys.executable, "run.py", "bench", "--url", "http://127.0.0.1:9", "--link", LINK],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    assert completed.returncode == 2
    assert "--link needs the bench's own server" in completed.stderr


async def test_sigterm_tears_the_link_down(tmp_path):
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("STREAMING_API_")}
    args = ["run.py", "bench", "--rows", "3000", "--repeat", "50", "--link", LINK, "--data-dir", str(data_dir)]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *args,
        cwd=PROJECT_ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await wait_until(lambda: relays_of(process.pid) != [], BENCH_TIMEOUT_SECONDS, "the link's relay runs")
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(BENCH_TIMEOUT_SECONDS):
            _, raw_stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 128 + signal.SIGTERM
    assert "stopped by SIGTERM; its server, database and link are stopped" in raw_stderr.decode()
    assert relays_of(process.pid) == []
    if SHAPER == "tbf":
        assert not [n for n in await asyncio.to_thread(namespaces) if n.startswith(f"sabench-{process.pid}-")]
