"""`run.py bench --table NAME`: the comparison on a demo table of the bench's own database (orders, blobs),
and on a user's table behind --url, each verified as its key allows."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

from streaming_api.bench.results import Options
from streaming_api.cli import main
from streaming_api.settings import PROJECT_ROOT, Settings
from tests.bench.threaded import served_in_a_thread
from tests.support.pg import create_scratch_database, drop_database

ORDERS_ROWS = 1500
FORMATS = ("ndjson", "csv", "arrow")
BLOBS_ROWS = 3
# Below the 6 MB three blobs rows make: /standard must refuse them (413), as it refuses 400 MB by default.
STANDARD_MAX_BYTES = 3_000_000
BENCH_TIMEOUT_SECONDS = 300
# The user's tables: an integer key with gaps (so ids are not 1..N), and a key of text.
GAPPY_ROWS = 300
LABELS_ROWS = 120


@dataclass(frozen=True)
class TableRun:
    returncode: int
    stdout: str
    stderr: str
    doc: dict


def _bench(tmp: Path, *args: str, environment: dict[str, str] | None = None) -> TableRun:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL" and not k.startswith("STREAMING_API_")}
    env.update(environment or {})
    command = [sys.executable, str(PROJECT_ROOT / "run.py"), "bench", "--repeat", "1", "--concurrency", "1"]
    command += ["--data-dir", str(tmp / "data"), "--json", str(tmp / "bench.json"), "--plot", str(tmp / "bench.png")]
    completed = subprocess.run(
        [*command, *args], capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=BENCH_TIMEOUT_SECONDS
    )
    doc = json.loads((tmp / "bench.json").read_text()) if (tmp / "bench.json").exists() else {}
    return TableRun(completed.returncode, completed.stdout, completed.stderr, doc)


def _requests(doc: dict) -> list[dict]:
    return [request for group in doc["groups"] for run in group["runs"] for request in run["requests"]]


# --- orders, in the bench's own database ------------------------------------------------------------


@pytest.fixture(scope="module")
def orders_run(tmp_path_factory: pytest.TempPathFactory) -> TableRun:
    tmp = tmp_path_factory.mktemp("bench-orders")
    return _bench(tmp, "--table", "orders", "--rows", str(ORDERS_ROWS), "--formats", ",".join(FORMATS))


def test_bench_on_orders_runs_and_verifies_every_body(orders_run):
    assert orders_run.returncode == 0, orders_run.stderr[-2000:]
    assert orders_run.doc["ok"] is True
    assert "Verified: all" in orders_run.stdout
    assert orders_run.stderr.splitlines()[0].startswith(
        f"bench: orders: standard and chunked × {', '.join(FORMATS)} × {ORDERS_ROWS:,} rows, 1 client, 1 run each:"
    )
    for request in _requests(orders_run.doc):
        assert request["verified"] and request["rows"] == ORDERS_ROWS


def test_bench_on_orders_seeds_it_serves_it_and_asks_for_it(orders_run):
    doc = orders_run.doc
    assert doc["seeding"][0]["table"] == "orders" and doc["seeding"][0]["rows"] == ORDERS_ROWS
    assert doc["server"]["settings"]["tables"] == ["orders"]
    assert doc["options"]["table"] == "orders"
    for group in doc["groups"]:
        assert group["path"].startswith(f"/{group['endpoint']}/orders?format={group['format']}")


def test_bench_on_orders_floors_copy_exactly_the_tables_rows(orders_run):
    for summary in orders_run.doc["summary"]:
        floor = summary["floor"]
        assert floor["ok"] and floor["rows"] == ORDERS_ROWS
        assert summary["floor_ratio"] > 0


def test_bench_on_orders_compares_read_tables_table_with_adbcs_types_included(orders_run):
    for group in [g for g in orders_run.doc["groups"] if g["format"] == "arrow"]:
        assert all(read["ok"] and read["rows"] == ORDERS_ROWS for read in group["table_reads"])
        compared = group["schemas"]["adbc"]
        # docs/types.md: a numeric(p,s) is a decimal128 here, numeric's text (arrow.opaque) from ADBC.
        assert [d["column"] for d in compared["type_differences"]] == ["amount"]
        assert compared["type_differences"][0]["service"] == "decimal128(12, 2)"
        assert compared["columns_compared"] == 12 and compared["columns_with_other_values"] == []
    headline = orders_run.doc["headline"][str(ORDERS_ROWS)]["chunked_arrow"]
    assert headline["type_differences_from_adbc"] == ["amount"]
    assert headline["read_table_over_adbc"] > 0


def test_bench_on_orders_names_the_table_its_columns_and_what_was_checked(orders_run):
    table = orders_run.doc["table"]
    assert table["name"] == "orders" and table["key"] == ["id"] and table["demo"] is True
    assert len(table["columns"]) == 13
    assert ["amount", "numeric(12,2)"] in table["columns"] and ["attributes", "jsonb"] in table["columns"]
    assert "id running 1, 2, 3" in table["verified"]
    assert "table orders" in orders_run.stdout.splitlines()[0]


# --- blobs, 2 MB a row: /chunked streams them, /standard refuses to buffer them ------------------------


@pytest.fixture(scope="module")
def blobs_run(tmp_path_factory: pytest.TempPathFactory) -> TableRun:
    tmp = tmp_path_factory.mktemp("bench-blobs")
    limit = {"STREAMING_API_STANDARD_MAX_BYTES": str(STANDARD_MAX_BYTES)}
    return _bench(tmp, "--table", "blobs", "--rows", str(BLOBS_ROWS), "--formats", "ndjson", environment=limit)


def test_bench_on_blobs_records_the_standard_refusal_as_expected_not_as_a_failure(blobs_run):
    assert blobs_run.returncode == 0, blobs_run.stderr[-2000:]
    assert blobs_run.doc["ok"] is True and blobs_run.doc["failures"] == []
    (standard,) = [g for g in blobs_run.doc["groups"] if g["endpoint"] == "standard"]
    assert standard["refused"]["error"] == "too_many_bytes"
    assert [r["status"] for run in standard["runs"] for r in run["requests"]] == [413]
    assert "refused: 413 too_many_bytes" in blobs_run.stdout
    assert "Refused: 1 /standard request(s) with 413" in blobs_run.stdout


def test_bench_on_blobs_measures_chunked_memory_on_two_megabyte_rows(blobs_run):
    (chunked,) = [s for s in blobs_run.doc["summary"] if s["endpoint"] == "chunked"]
    one = chunked["levels"]["1"]
    assert one["verified"] == one["requests"] == 1
    assert one["bytes"] > BLOBS_ROWS * 2_000_000
    growth = one["rss_growth_per_request_bytes"]["max"]
    # Issue 18's bound for a 2 MB-row table.
    assert growth is not None and growth < 64e6


# --- a table of the user's, behind --url -----------------------------------------------------------


@pytest.fixture(scope="module")
def user_database(database_url: str) -> Iterator[str]:
    """A database with tables of a user's: gappy (bigint ids 7, 14, 21, ...), labels (a text key) and
    "Mixed Case"."""

    async def make() -> str:
        url = await create_scratch_database(database_url, "bench_user")
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("CREATE TABLE gappy (id bigint PRIMARY KEY, name text NOT NULL, score float8)")
            await conn.execute(
                "INSERT INTO gappy SELECT 7 * i, 'name ' || i, i / 3.0 FROM generate_series(1, $1) AS i", GAPPY_ROWS
            )
            await conn.execute('CREATE TABLE labels (code text PRIMARY KEY, "Count" integer NOT NULL)')
            await conn.execute(
                "INSERT INTO labels SELECT md5(i::text), i FROM generate_series(1, $1) AS i", LABELS_ROWS
            )
            await conn.execute('CREATE TABLE "Mixed Case" (id integer PRIMARY KEY)')
            await conn.execute('INSERT INTO "Mixed Case" SELECT generate_series(10, 19)')
        finally:
            await conn.close()
        return url

    url = asyncio.run(make())
    try:
        yield url
    finally:
        asyncio.run(drop_database(url))


@pytest.fixture
def user_server(settings: Settings, user_database: str) -> Iterator[str]:
    tables = ("gappy", "labels", '"Mixed Case"')
    with served_in_a_thread(settings.replace(database_url=user_database, tables=tables)) as url:
        yield url


def _remote(capsys: pytest.CaptureFixture[str], url: str, token: str, table: str, out: Path, *extra: str) -> dict:
    """Run the bench against the server at url (in this process, as the command line does); its JSON."""
    plan = ["--repeat", "1", "--concurrency", "1", "--formats", "ndjson,csv", "--quiet"]
    files = ["--json", str(out), "--plot", str(out.with_suffix(".png"))]
    code = main(["bench", "--url", url, "--token", token, "--table", table, *plan, *files, *extra])
    assert code == 0, capsys.readouterr().out[-2000:]
    return json.loads(out.read_text())


def test_bench_on_a_users_table_checks_its_integer_key_goes_up_not_that_it_is_one_to_n(
    user_server, user_database, token, tmp_path, capsys
):
    doc = _remote(capsys, user_server, token, "gappy", tmp_path / "gappy.json", "--database-url", user_database)
    assert doc["table"]["demo"] is False and doc["table"]["verified"].endswith("id going strictly up")
    assert all(s["floor"]["rows"] == GAPPY_ROWS and s["floor"]["ok"] for s in doc["summary"])
    assert {r["rows"] for r in _requests(doc)} == {GAPPY_ROWS}
    assert {g["path"].split("?")[0] for g in doc["groups"]} == {"/standard/gappy", "/chunked/gappy"}


def test_bench_learns_a_table_from_the_servers_tables_without_a_database(user_server, token, tmp_path, capsys):
    doc = _remote(capsys, user_server, token, "labels", tmp_path / "labels.json", "--rows", "50")
    assert doc["table"]["key"] == ["code"] and "its key is not one integer column" in doc["table"]["verified"]
    assert {r["rows"] for r in _requests(doc)} == {50}
    assert "no floor" in " ".join(doc["notes"])


def test_bench_names_a_table_as_tables_lists_it_case_and_spaces_kept(
    user_server, user_database, token, tmp_path, capsys
):
    doc = _remote(capsys, user_server, token, "Mixed Case", tmp_path / "mixed.json", "--database-url", user_database)
    assert doc["table"]["name"] == "Mixed Case"
    assert {g["path"].split("?")[0] for g in doc["groups"]} == {"/standard/Mixed%20Case", "/chunked/Mixed%20Case"}
    assert {r["rows"] for r in _requests(doc)} == {10}


def test_bench_on_a_table_the_server_does_not_serve_is_one_line(user_server, token, tmp_path, capsys):
    code = main(["bench", "--url", user_server, "--token", token, "--table", "secrets", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: the server at {user_server} serves no table named 'secrets' (it serves: gappy, labels, Mixed Case)"
    ]


def test_the_bench_own_database_offers_only_the_demo_tables(tmp_path, capsys):
    code = main(["bench", "--table", "gappy", "--data-dir", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: --table gappy: the bench's own database holds only the demo tables")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_blobs_default_to_a_size_that_fits_in_memory():
    assert Options(table="blobs").sizes == (200,)
    assert Options(table="orders").sizes == Options().sizes == (500_000,)
    assert Options(table="blobs", rows=(7,)).sizes == (7,)
