"""streaming_api.client against the real server and PostgreSQL, through a relay that cuts connections."""

from __future__ import annotations

import io

import pytest
from yarl import URL

from streaming_api.client import BadRequest, GaveUp, Retry, Unauthorized, stream_rows
from streaming_api.client.raw import RawDecoder, RawWriter
from streaming_api.client.records import RecordSplitter
from streaming_api.tokens import load_keys, mint_token
from tests.support.bodies import COLUMNS, FORMATS, typed
from tests.support.pg import ROWS
from tests.support.relay import FIRST_CUT, SECOND_CUT

# Response bytes (headers included) before a cut: well inside every format's body of ROWS rows.


def _query(request_line: str) -> dict[str, str]:
    return dict(URL(request_line.split(" ")[1]).query)


async def test_stream_rows_yields_the_tables_rows(server, token, table_rows):
    rows = [row async for row in stream_rows(str(server.make_url("/chunked")), token)]
    assert [typed(row) for row in rows] == table_rows


@pytest.mark.parametrize("fmt", ["csv", "text"])
async def test_stream_rows_yields_csv_records_as_lists(server, token, table_rows, fmt):
    rows = [row async for row in stream_rows(str(server.make_url("/chunked")), token, format=fmt)]
    assert [typed(dict(zip(COLUMNS, row, strict=True))) for row in rows] == table_rows


@pytest.mark.parametrize("compressed", [True, False], ids=["zstd", "identity"])
@pytest.mark.parametrize("fmt", FORMATS)
async def test_stream_rows_resumes_after_cuts_without_duplicates_or_gaps(make_relay, token, fmt, compressed):
    relay = await make_relay(cuts=[FIRST_CUT, SECOND_CUT])
    rows = [
        row async for row in stream_rows(relay.url("/chunked"), token, format=fmt, backoff=0, compressed=compressed)
    ]
    ids = [int(row["id"] if isinstance(row, dict) else row[0]) for row in rows]
    assert ids == list(range(1, ROWS + 1))
    assert relay.connections == 3


async def test_stream_rows_resumes_after_the_last_id_it_yielded(make_relay, token):
    relay = await make_relay(cuts=[FIRST_CUT])
    yielded: list[int] = []
    retries: list[tuple[Retry, int]] = []
    async for row in stream_rows(
        relay.url("/chunked"), token, backoff=0, on_retry=lambda event: retries.append((event, yielded[-1]))
    ):
        yielded.append(row["id"])
    [(event, last_yielded)] = retries
    assert event.last_key == (str(last_yielded),)
    assert _query(relay.request_lines[1])["after"] == f'["{last_yielded}"]'


async def test_stream_rows_resumed_request_asks_only_for_the_remaining_rows(make_relay, token):
    relay = await make_relay(cuts=[FIRST_CUT])
    retries: list[Retry] = []
    rows = [
        row async for row in stream_rows(relay.url("/chunked"), token, limit=2_000, backoff=0, on_retry=retries.append)
    ]
    assert [row["id"] for row in rows] == list(range(1, 2_001))
    assert _query(relay.request_lines[1])["limit"] == str(2_000 - retries[0].rows)


async def test_stream_rows_resumes_a_standard_body_cut_short(make_relay, token):
    relay = await make_relay(cuts=[FIRST_CUT])
    rows = [row async for row in stream_rows(relay.url("/standard"), token, format="csv", backoff=0)]
    assert [int(row[0]) for row in rows] == list(range(1, ROWS + 1))
    assert relay.connections == 2


async def test_stream_rows_starts_after_after_id(server, token):
    rows = [row async for row in stream_rows(str(server.make_url("/chunked")), token, after_id=2_000)]
    assert [row["id"] for row in rows] == list(range(2_001, ROWS + 1))


async def test_stream_rows_retry_budget_restarts_after_each_row(make_relay, token):
    relay = await make_relay(cuts=[30_011, 30_011, 30_011])
    # Uncompressed, so that each cut falls inside the body.
    rows = [row async for row in stream_rows(relay.url("/chunked"), token, retries=1, backoff=0, compressed=False)]
    assert len(rows) == ROWS
    assert relay.connections == 4


async def test_stream_rows_gives_up_after_its_retries(make_relay, token):
    relay = await make_relay(cut_every=0)
    retries: list[Retry] = []
    with pytest.raises(GaveUp) as caught:
        [row async for row in stream_rows(relay.url("/chunked"), token, retries=2, backoff=0, on_retry=retries.append)]
    assert caught.value.attempts == 3
    assert [event.attempt for event in retries] == [1, 2]


async def test_stream_rows_raises_unauthorized_with_the_servers_message(server, settings):
    other_key = load_keys(settings.replace(jwt_secret="another secret of at least 32 bytes!!"))
    with pytest.raises(Unauthorized) as caught:
        [row async for row in stream_rows(str(server.make_url("/chunked")), mint_token(other_key))]
    assert caught.value.status == 401
    assert caught.value.detail == "bad signature"
    assert "python run.py token" in str(caught.value)


async def test_stream_rows_raises_bad_request_naming_the_parameter(server, settings, token):
    with pytest.raises(BadRequest) as caught:
        [
            row
            async for row in stream_rows(str(server.make_url("/chunked")), token, page_size=settings.max_page_size + 1)
        ]
    assert caught.value.status == 400
    assert caught.value.parameter == "page_size"
    assert "page_size" in caught.value.detail


async def test_stream_rows_refuses_its_own_parameters_in_the_url(server, token):
    with pytest.raises(ValueError, match="after_id"):
        [row async for row in stream_rows(str(server.make_url("/chunked?after_id=5")), token)]


@pytest.mark.parametrize("fmt", FORMATS)
async def test_record_splitter_gives_whole_records_when_fed_one_byte_at_a_time(client, auth, fmt):
    # 203 rows: rows 101 and 202 carry the label with a quoted newline, a comma and quotes.
    body = await (await client.get(f"/chunked?format={fmt}&limit=203", headers=auth)).read()
    splitter = RecordSplitter(fmt)
    records = [record for i in range(len(body)) for record in splitter.feed(body[i : i + 1])[1]]
    assert len(records) == 203
    rebuilt = (
        splitter.head + b",\n".join(records) + b"]\n"
        if fmt == "json"
        else splitter.head + b"".join(record + b"\n" for record in records)
    )
    assert rebuilt == body


@pytest.mark.parametrize("fmt", FORMATS)
async def test_the_raw_decoder_fed_a_byte_at_a_time_writes_the_body_and_counts_its_rows(client, auth, fmt):
    """fetch's path: records found without parsing a field (quoted newlines, commas, quotes in the labels),
    counted, the body written back byte for byte, and the last record's key read when asked."""
    body = await (await client.get(f"/chunked?format={fmt}&limit=203", headers=auth)).read()
    decoder = RawDecoder(fmt, ("id",), resumed=False)
    sink = io.BytesIO()
    writer = RawWriter(fmt, sink)
    rows = 0
    for i in range(len(body)):
        for block in decoder.feed(body[i : i + 1]):
            writer.write(block)
            rows += block.rows
    decoder.close()
    writer.finish()
    assert (rows, sink.getvalue()) == (203, body)
    assert decoder.last_key() == ("203",)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_resumed_response_joins_the_records_before_it_as_one_body(client, auth, fmt):
    """Cut inside row 102 (after row 101's label with a quoted newline), resumed after the last whole row's
    key: the bytes of one body."""
    whole = await (await client.get(f"/chunked?format={fmt}&limit=203", headers=auth)).read()
    first = await (await client.get(f"/chunked?format={fmt}&limit=102", headers=auth)).read()
    rest = await (await client.get(f"/chunked?format={fmt}&after=101&limit=102", headers=auth)).read()
    sink = io.BytesIO()
    writer = RawWriter(fmt, sink)
    for decoder, part in (
        (RawDecoder(fmt, ("id",), False), first[: len(first) - 1]),
        (RawDecoder(fmt, ("id",), True), rest),
    ):
        for block in decoder.feed(part):
            writer.write(block)
    writer.finish()
    assert sink.getvalue() == whole
