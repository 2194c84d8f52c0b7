"""`run.py fetch --format arrow | parquet`, --columns, and the progress line's share and time left."""

from __future__ import annotations

import io

import aiohttp
import pandas as pd
import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet as pq
import pytest

from streaming_api.cli.fetch import EXIT_GAVE_UP, EXIT_OK, EXIT_USAGE, download_with_progress, progress_text
from streaming_api.client import RowCount
from streaming_api.client.arrow import END_OF_STREAM, arrow_messages
from streaming_api.client.download import download
from streaming_api.client.parquet import ParquetFileWriter
from tests.cli.test_fetch import Terminal, _environment, _fetch_args, _run_fetch
from tests.support.pg import ROWS
from tests.support.relay import FIRST_CUT, SECOND_CUT


async def _clean_body(server, token: str, query: str = "") -> bytes:
    async with (
        aiohttp.ClientSession() as session,
        session.get(server.make_url(f"/chunked.arrow?{query}"), headers={"Authorization": f"JWT {token}"}) as response,
    ):
        assert response.status == 200
        return await response.read()


async def _clean_table(server, token: str, query: str = "") -> pa.Table:
    return pa.ipc.open_stream(await _clean_body(server, token, query)).read_all()


async def test_an_arrow_download_is_the_servers_stream_byte_for_byte(server, token, tmp_path):
    out = tmp_path / "points.arrow"
    await download(str(server.make_url("/chunked")), token, "arrow", out)
    assert out.read_bytes() == await _clean_body(server, token)


@pytest.mark.parametrize("compressed", [True, False], ids=["zstd", "identity"])
async def test_an_arrow_download_across_cuts_is_one_stream_of_the_same_table(
    server, make_relay, token, tmp_path, compressed
):
    relay = await make_relay(cuts=[FIRST_CUT, SECOND_CUT])
    out = tmp_path / "points.arrow"
    result = await download(relay.url("/chunked"), token, "arrow", out, backoff=0, compressed=compressed)
    data = out.read_bytes()
    assert pa.ipc.open_stream(data).read_all().equals(await _clean_table(server, token))
    assert data.endswith(END_OF_STREAM) and data.count(b"\xff\xff\xff\xff\x00\x00\x00\x00") == 1
    assert (result.rows, result.retries) == (ROWS, 2)


async def test_a_parquet_download_across_cuts_reads_back_equal(server, make_relay, token, tmp_path):
    relay = await make_relay(cuts=[FIRST_CUT, SECOND_CUT])
    out = tmp_path / "points.parquet"
    await download(relay.url("/chunked"), token, "parquet", out, backoff=0)
    assert pq.read_table(out).equals(await _clean_table(server, token))


async def test_pandas_reads_the_parquet_file(server, token, tmp_path):
    out = tmp_path / "points.parquet"
    await download(str(server.make_url("/chunked")), token, "parquet", out)
    frame = pd.read_parquet(out)
    assert frame.equals((await _clean_table(server, token)).to_pandas())


async def test_parquet_row_groups_are_written_as_the_rows_arrive(server, token):
    sink = io.BytesIO()
    writer = ParquetFileWriter(sink, rows_per_group=500)
    async for message in arrow_messages(str(server.make_url("/chunked")), token, page_size=300):
        writer.write(message)
    writer.finish()
    metadata = pq.ParquetFile(io.BytesIO(sink.getvalue())).metadata
    sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    assert sizes == [500] * (ROWS // 500) + [ROWS % 500]


async def test_a_parquet_download_of_no_rows_has_the_schema(server, token, tmp_path):
    out = tmp_path / "points.parquet"
    await download(str(server.make_url("/chunked")), token, "parquet", out, after_id=ROWS)
    table = pq.read_table(out)
    assert table.num_rows == 0
    assert table.schema.names == ["id", "x", "y", "label", "value", "recorded_at"]


async def test_download_writes_only_the_columns_asked_for(server, token, tmp_path):
    out = tmp_path / "points.csv"
    await download(str(server.make_url("/chunked")), token, "csv", out, columns="label,id", limit=2)
    assert out.read_text().splitlines()[0] == "label,id"


def test_progress_shows_the_share_done_and_the_time_left():
    text = progress_text(250, 1_000_000, 1.0, RowCount(1_000, exact=True), rate=250)
    assert text.endswith("25% of 1,000, 3.0 s left")


def test_progress_marks_an_estimate_with_a_tilde():
    text = progress_text(250, 1_000_000, 1.0, RowCount(1_000, exact=False), rate=250)
    assert text.endswith("~25% of ~1,000, ~3.0 s left")


def test_progress_says_no_time_left_before_the_rate_is_measured():
    assert progress_text(250, 1_000_000, 1.0, RowCount(1_000, exact=True)).endswith("25% of 1,000")


def test_progress_without_a_count_shows_rows_and_rate_only():
    assert "%" not in progress_text(250, 1_000_000, 1.0, None)


async def test_the_progress_line_shows_the_share_done_on_a_terminal(server, token, tmp_path):
    terminal = Terminal()
    args = _fetch_args(tmp_path / "points.csv")
    # /standard always knows its count (/chunked says it when it is known by its first page).
    await download_with_progress(str(server.make_url("/standard")), token, args, terminal)
    assert f"of {ROWS:,}" in terminal.getvalue()


async def test_fetch_writes_a_parquet_file_pandas_reads(server, token, jwt_secret, tmp_path):
    out = tmp_path / "points.parquet"
    url = str(server.make_url("/chunked"))
    env = _environment(tmp_path, jwt_secret)
    code, stderr = await _run_fetch(
        env, "--url", url, "--format", "parquet", "--out", str(out), "--columns", "id,value"
    )
    assert code == EXIT_OK, stderr
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["id", "value"]
    assert frame["id"].tolist() == list(range(1, ROWS + 1))


async def test_fetch_refuses_parquet_to_stdout(server, jwt_secret, tmp_path):
    url = str(server.make_url("/chunked"))
    code, stderr = await _run_fetch(_environment(tmp_path, jwt_secret), "--url", url, "--format", "parquet")
    assert code == EXIT_USAGE
    assert "--out" in stderr


async def test_fetch_without_the_id_stops_at_a_drop_and_says_why(make_relay, jwt_secret, tmp_path):
    relay = await make_relay(cuts=[FIRST_CUT])
    out = tmp_path / "points.csv"
    env = _environment(tmp_path, jwt_secret)
    args = ("--url", relay.url("/chunked"), "--columns", "label,value", "--no-compression", "--out", str(out))
    code, stderr = await _run_fetch(env, *args)
    assert code == EXIT_GAVE_UP
    assert "leave out the table's key" in stderr and "nothing to resume after" in stderr
    assert not out.exists()
