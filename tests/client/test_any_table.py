"""The client on any table: it learns the columns from the body and the key from X-Key, and a download cut
again and again resumes after the last row by that key (a composite one: text and an integer), to
exactly what an uninterrupted one gives, in every format. Without a key, a cut after rows is CannotResume."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from streaming_api.client import CannotResume, download, read_table, stream_rows
from streaming_api.web.app import create_app
from tests.support import corpus
from tests.support.relay import CuttingRelay

PATH = "/chunked/" + quote(corpus.URL_NAME, safe="")
VIEW = "/chunked/" + quote(f"{corpus.SCHEMA}.a_view", safe="")
# Small enough that every response is cut, a few rows in (the corpus's rows are a few hundred bytes).
CUT_EVERY = 2000


@pytest.fixture
async def corpus_server(aiohttp_server, settings, corpus_url):
    return await aiohttp_server(create_app(settings.replace(database_url=corpus_url, tables=corpus.TABLES)))


@pytest.fixture
async def cutting(corpus_server):
    relay = await CuttingRelay(corpus_server.port, cut_every=CUT_EVERY).start()
    try:
        yield relay
    finally:
        await relay.close()


def _ipc(table) -> bytes:
    """The table as one IPC stream of one batch: equal bytes for equal tables, however they were cut."""
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize("fmt", ["ndjson", "json", "csv"])
async def test_a_download_cut_many_times_equals_an_uninterrupted_one(corpus_server, cutting, token, fmt, tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    await download(str(corpus_server.make_url(PATH)), token, fmt, whole, page_size=2, compressed=False)
    result = await download(cutting.url(PATH), token, fmt, cut, page_size=2, compressed=False, backoff=0, retries=50)
    assert cut.read_bytes() == whole.read_bytes()
    assert result.rows == corpus.ROWS and result.retries >= 1


async def test_stream_rows_resumes_by_a_composite_key(cutting, token, corpus_rows):
    rows = [
        row async for row in stream_rows(cutting.url(PATH), token, page_size=2, compressed=False, backoff=0, retries=50)
    ]
    assert [(row["tenant"], row["seq"]) for row in rows] == [(r["tenant"], r["seq"]) for r in corpus_rows]
    assert len(cutting.request_lines) >= 2
    assert any("after=%5B%22" in line or "after=[" in line for line in cutting.request_lines[1:])


async def test_read_table_resumes_to_the_same_table(corpus_server, token):
    pytest.importorskip("pyarrow")
    whole = await read_table(str(corpus_server.make_url(PATH)), token, page_size=1)
    # The schema message of 31 columns comes first in every response: cut after it and a batch or two.
    relay = await CuttingRelay(corpus_server.port, cut_every=9000).start()
    try:
        table = await read_table(relay.url(PATH), token, page_size=1, compressed=False, backoff=0, retries=50)
        assert relay.connections > 2
    finally:
        await relay.close()
    assert _ipc(table) == _ipc(whole)  # (Table.equals holds NaN unequal to itself)


async def test_starting_after_a_key_value(corpus_server, token, corpus_rows):
    second = corpus_rows[1]
    rows = [
        row
        async for row in stream_rows(str(corpus_server.make_url(PATH)), token, after=[second["tenant"], second["seq"]])
    ]
    assert [(row["tenant"], row["seq"]) for row in rows] == [(r["tenant"], r["seq"]) for r in corpus_rows[2:]]


async def test_a_view_cut_after_rows_cannot_be_resumed_and_says_why(corpus_server, token):
    # The response's headers, then a few rows: the view's are a few dozen bytes each.
    relay = await CuttingRelay(corpus_server.port, cuts=[560]).start()
    try:
        with pytest.raises(CannotResume, match="no key to resume after"):
            [row async for row in stream_rows(relay.url(VIEW), token, compressed=False, backoff=0)]
    finally:
        await relay.close()
