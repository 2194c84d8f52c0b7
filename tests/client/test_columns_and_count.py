"""columns= and the row count in the client: rows carry the columns asked for, resuming needs the id,
and on_count says how many rows the whole stream carries, across resumes."""

from __future__ import annotations

import pytest

from streaming_api.client import CannotResume, RowCount, stream_rows
from tests.support.pg import ROWS
from tests.support.relay import FIRST_CUT, SECOND_CUT


async def test_rows_carry_the_columns_asked_for_in_their_order(server, token):
    url = str(server.make_url("/chunked"))
    rows = [row async for row in stream_rows(url, token, columns=["value", "id", "label"], limit=3)]
    assert [list(row) for row in rows] == [["value", "id", "label"]] * 3
    assert [row["id"] for row in rows] == [1, 2, 3]


async def test_columns_may_be_one_comma_separated_string(server, token, table_rows):
    url = str(server.make_url("/chunked"))
    rows = [row async for row in stream_rows(url, token, format="csv", columns="label,id")]
    assert rows == [[row["label"], str(row["id"])] for row in table_rows]


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
async def test_a_cut_resumes_after_the_id_wherever_columns_put_it(make_relay, token, fmt):
    relay = await make_relay(cuts=[FIRST_CUT, SECOND_CUT])
    url = relay.url("/chunked")
    rows = [row async for row in stream_rows(url, token, format=fmt, columns="label,id", backoff=0, compressed=False)]
    ids = [int(row[1]) if fmt == "csv" else row["id"] for row in rows]
    assert ids == list(range(1, ROWS + 1))
    assert relay.connections == 3


async def test_without_the_id_a_stream_that_is_not_cut_is_whole(server, token, table_rows):
    url = str(server.make_url("/chunked"))
    rows = [row async for row in stream_rows(url, token, columns=("x", "y"))]
    assert rows == [{"x": row["x"], "y": row["y"]} for row in table_rows]


async def test_without_the_id_a_cut_after_rows_arrived_raises_cannot_resume(make_relay, token):
    relay = await make_relay(cuts=[FIRST_CUT])
    url = relay.url("/chunked")
    received = []
    with pytest.raises(CannotResume) as caught:
        async for row in stream_rows(url, token, columns=("label", "value"), backoff=0, compressed=False):
            received.append(row)
    assert caught.value.rows == len(received) > 0
    assert "include the key's columns" in str(caught.value)
    assert relay.connections == 1


async def test_without_the_id_a_failure_before_the_first_row_is_retried(make_relay, token):
    relay = await make_relay(cuts=[0])
    rows = [row async for row in stream_rows(relay.url("/chunked"), token, columns="x", backoff=0)]
    assert len(rows) == ROWS
    assert relay.connections == 2


async def test_columns_in_the_url_are_refused(server, token):
    with pytest.raises(ValueError, match="columns"):
        [row async for row in stream_rows(str(server.make_url("/chunked?columns=x")), token)]


async def test_on_count_announces_the_rows_the_stream_carries(server, token):
    counts: list[RowCount] = []
    url = str(server.make_url("/standard"))
    rows = [row async for row in stream_rows(url, token, after_id=100, limit=1_000, on_count=counts.append)]
    assert counts == [RowCount(1_000, exact=True, received=0)]
    assert len(rows) == counts[0].rows


async def test_after_a_resume_on_count_adds_the_rows_already_received(make_relay, token):
    relay = await make_relay(cuts=[FIRST_CUT])
    counts: list[RowCount] = []
    url = relay.url("/standard")
    rows = [row async for row in stream_rows(url, token, backoff=0, on_count=counts.append, compressed=False)]
    first, resumed = counts
    assert first == RowCount(ROWS, exact=True, received=0)
    assert resumed.rows == ROWS == len(rows)
    assert 0 < resumed.received < ROWS


def test_a_count_reads_as_its_figure_with_a_tilde_when_estimated():
    assert (str(RowCount(500_000, exact=True)), str(RowCount(500_000, exact=False))) == ("500,000", "~500,000")
