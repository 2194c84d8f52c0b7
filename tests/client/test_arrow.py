"""format=arrow in the client, against the real server: record batches as they arrive, a whole table, and
resuming after cuts to exactly the uninterrupted table."""

from __future__ import annotations

import aiohttp
import pyarrow as pa
import pyarrow.ipc
import pytest
from yarl import URL

from streaming_api.client import Retry, read_table, stream_record_batches, stream_rows
from streaming_api.client.arrow import END_OF_STREAM, StreamDecoder
from streaming_api.client.errors import Retryable
from tests.support.pg import ROWS
from tests.support.relay import FIRST_CUT, SECOND_CUT


async def _clean_table(server, token: str, query: str = "") -> pa.Table:
    async with (
        aiohttp.ClientSession() as session,
        session.get(server.make_url(f"/chunked.arrow?{query}"), headers={"Authorization": f"JWT {token}"}) as response,
    ):
        return pa.ipc.open_stream(await response.read()).read_all()


async def _body(server, token: str, query: str) -> bytes:
    async with (
        aiohttp.ClientSession() as session,
        session.get(server.make_url(f"/chunked.arrow?{query}"), headers={"Authorization": f"JWT {token}"}) as response,
    ):
        return await response.read()


async def test_read_table_equals_the_servers_table(server, token):
    table = await read_table(str(server.make_url("/chunked")), token)
    assert table.equals(await _clean_table(server, token))
    assert table.num_rows == ROWS


@pytest.mark.parametrize("compressed", [True, False], ids=["zstd", "identity"])
async def test_read_table_across_cuts_equals_the_uninterrupted_table(server, make_relay, token, compressed):
    relay = await make_relay(cuts=[FIRST_CUT, SECOND_CUT])
    table = await read_table(relay.url("/chunked"), token, backoff=0, compressed=compressed)
    assert table.equals(await _clean_table(server, token))
    assert relay.connections == 3


async def test_a_cut_resumes_after_the_last_whole_batchs_last_id(make_relay, token):
    relay = await make_relay(cuts=[FIRST_CUT])
    last_ids: list[int] = []
    retries: list[tuple[Retry, int]] = []
    url = relay.url("/chunked")
    async for batch in stream_record_batches(
        url, token, backoff=0, compressed=False, on_retry=lambda event: retries.append((event, last_ids[-1]))
    ):
        last_ids.append(batch.column("id")[-1].as_py())
    [(event, last_whole)] = retries
    assert event.last_key == (str(last_whole),)
    assert dict(URL(relay.request_lines[1].split(" ")[1]).query)["after"] == f'["{last_whole}"]'


async def test_a_standard_body_cut_short_resumes_to_the_same_table(server, make_relay, token):
    relay = await make_relay(cuts=[FIRST_CUT])
    table = await read_table(relay.url("/standard"), token, backoff=0, compressed=False)
    assert table.equals(await _clean_table(server, token))


async def test_stream_rows_yields_record_batches_for_arrow(server, token, settings):
    url = str(server.make_url("/chunked"))
    batches = [batch async for batch in stream_rows(url, token, format="arrow", page_size=1_000)]
    assert all(isinstance(batch, pa.RecordBatch) for batch in batches)
    assert [batch.num_rows for batch in batches] == [settings.first_page_size, 1_000, 1_000, ROWS - 2_100]


async def test_stream_rows_yields_typed_rows_for_arrow_with_as_rows(server, token, table_rows):
    url = str(server.make_url("/chunked"))
    rows = [row async for row in stream_rows(url, token, format="arrow", as_rows=True)]
    assert rows == table_rows


async def test_columns_choose_the_tables_columns(server, token):
    table = await read_table(str(server.make_url("/chunked")), token, columns="value,id", limit=5)
    assert table.schema.names == ["value", "id"]
    assert table.column("id").to_pylist() == [1, 2, 3, 4, 5]


async def test_an_export_of_no_rows_is_an_empty_table_with_the_schema(server, token):
    table = await read_table(str(server.make_url("/chunked")), token, after_id=ROWS)
    assert table.num_rows == 0
    assert table.schema.equals((await _clean_table(server, token, "limit=1")).schema)


async def test_the_decoder_hands_on_each_batch_when_its_last_byte_arrives(server, token):
    body = await _body(server, token, "limit=203&page_size=50")
    ends = []
    position = 0
    for batch in pa.ipc.open_stream(body):
        position = body.index(batch.serialize().to_pybytes(), position) + batch.serialize().size
        ends.append(position)
    decoder = StreamDecoder([])
    arrived = [i + 1 for i in range(len(body)) for message in decoder.feed(body[i : i + 1]) if message.batch]
    decoder.close()
    assert arrived == ends


async def test_a_stream_without_its_end_of_stream_marker_is_incomplete(server, token):
    body = await _body(server, token, "limit=203")
    assert body.endswith(END_OF_STREAM)
    decoder = StreamDecoder([])
    decoder.feed(body[: -len(END_OF_STREAM)])
    with pytest.raises(Retryable, match="end-of-stream"):
        decoder.close()
