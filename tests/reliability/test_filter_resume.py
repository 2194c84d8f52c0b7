"""Filters across pages and resumes: a filtered export resumed after any of its rows gives exactly the rest
of the rows an uninterrupted one gives (keyset pages, the filter in every page's WHERE and in the plans
that bound them); a stream cut again and again and resumed by the client equals the uninterrupted one;
and a resume in the export's snapshot gives that moment's filtered rows, whatever was written since."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import asyncpg
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from streaming_api.client import download, stream_rows
from streaming_api.web.app import create_app
from tests.reliability.test_injection import PLAUSIBLE
from tests.support import filtered
from tests.support.filtered import Wanted, ids_of, oracle
from tests.support.relay import CuttingRelay

# Keeps about two thirds of the rows: dozens of pages of 7, each missing some rows (one column filtered twice).
KEEPS_MANY = [
    Wanted("note", "like", ("%O%",), negated=True),
    Wanted("$1", "gte", ("2",)),
    Wanted("$1", "lt", ("16",)),
]


# Every column with an order (json has none), each filtered with values its type reads: filters that keep rows.
ORDERED = ("id", "$1", 'it\'s "quoted"', "with space", "ünïcode ✓", "limit", "flag", "note", "at", "score", "mood")
ORDERED += ("amount", "tags")


@st.composite
def kept(draw: st.DrawFn) -> Wanted:
    column = draw(st.sampled_from(ORDERED))
    operator = draw(st.sampled_from(("eq", "neq", "gt", "gte", "lt", "lte", "in", "is")))
    if operator == "is":
        values: tuple[str, ...] = (draw(st.sampled_from(("null", "not_null"))),)
    elif operator == "in":
        values = tuple(draw(st.lists(PLAUSIBLE[column], min_size=1, max_size=5)))
    else:
        values = (draw(PLAUSIBLE[column]),)
    return Wanted(column, operator, values, draw(st.booleans()))


@pytest.fixture
async def conn(filtered_url) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(filtered_url)
    yield connection
    await connection.close()


@hypothesis_settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    filters=st.lists(kept(), min_size=1, max_size=2),
    cut=st.floats(min_value=0, max_value=1),
    page_size=st.integers(min_value=1, max_value=20),
    fmt=st.sampled_from(("ndjson", "csv", "arrow")),
)
async def test_a_filtered_export_resumed_after_any_row_gives_the_rest(
    filtered_client, auth, conn, filters, cut, page_size, fmt
):
    expected = await oracle(conn, filters)
    whole = await filtered_client.get(f"/chunked/things?{filtered.query(filters, format=fmt)}", headers=auth)
    assert ids_of(fmt, await whole.read()) == expected
    if not expected:
        return  # nothing to resume after
    at = min(int(cut * len(expected)), len(expected) - 1)
    query = filtered.query(filters, format=fmt, after=str(expected[at]), page_size=str(page_size))
    rest = await filtered_client.get(f"/chunked/things?{query}", headers=auth)
    assert rest.status == 200
    assert ids_of(fmt, await rest.read()) == expected[at + 1 :]


@pytest.fixture
async def filtered_server(aiohttp_server, filtered_settings):
    return await aiohttp_server(create_app(filtered_settings))


async def test_stream_rows_cut_again_and_again_resumes_to_the_filtered_rows(filtered_server, token, conn):
    # Cut a dozen times: under max_snapshots resumes (each keeps its holder for snapshot_grace).
    relay = await CuttingRelay(filtered_server.port, cut_every=3000).start()
    try:
        url = relay.url(f"/chunked/things?{filtered.query(KEEPS_MANY)}")
        rows = [row async for row in stream_rows(url, token, page_size=3, compressed=False, backoff=0, retries=200)]
        assert len(relay.request_lines) > 5  # cut many times
    finally:
        await relay.close()
    assert [row["id"] for row in rows] == await oracle(conn, KEEPS_MANY)
    # Every resume carried the filters on, the column filtered twice with both.
    assert all("$1=gte.2&$1=lt.16" in line.replace("%24", "$") for line in relay.request_lines)


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
async def test_a_filtered_download_cut_many_times_equals_an_uninterrupted_one(filtered_server, token, fmt, tmp_path):
    path = f"/chunked/things?{filtered.query(KEEPS_MANY)}"
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    await download(str(filtered_server.make_url(path)), token, fmt, whole, page_size=2, compressed=False)
    relay = await CuttingRelay(filtered_server.port, cut_every=3000).start()
    try:
        result = await download(relay.url(path), token, fmt, cut, page_size=2, compressed=False, backoff=0, retries=200)
    finally:
        await relay.close()
    assert cut.read_bytes() == whole.read_bytes()
    assert result.retries >= 1


@pytest.fixture
async def moment(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A table of its own, to write to while an export's snapshot is held."""
    conn = await asyncpg.connect(database_url)
    await conn.execute(
        "DROP SCHEMA IF EXISTS filtered_moment CASCADE; CREATE SCHEMA filtered_moment;"
        " CREATE TABLE filtered_moment.t (id bigint PRIMARY KEY, kept boolean NOT NULL, n int NOT NULL);"
        " INSERT INTO filtered_moment.t SELECT g, g % 3 <> 0, g FROM generate_series(1, 400) g;"
        " ANALYZE filtered_moment.t"
    )
    try:
        yield conn
    finally:
        await conn.execute("DROP SCHEMA filtered_moment CASCADE")
        await conn.close()


async def test_a_resume_in_the_snapshot_gives_that_moments_filtered_rows(aiohttp_client, settings, auth, moment):
    client = await aiohttp_client(create_app(settings.replace(tables=("filtered_moment.t",), page_size=10)))
    query = "kept=is.true&n=lt.350"
    kept = await moment.fetch("SELECT id FROM filtered_moment.t WHERE kept AND n < 350 ORDER BY id")
    before = [record["id"] for record in kept]
    first = await client.get(f"/chunked/filtered_moment.t?{query}&limit=50", headers=auth)
    head = ids_of("ndjson", await first.read())
    snapshot = first.headers["X-Snapshot"]
    # Written since: rows the filter kept leave it or go, rows it left out join it, new rows come.
    await moment.execute(
        "UPDATE filtered_moment.t SET kept = NOT kept WHERE id > 200;"
        " DELETE FROM filtered_moment.t WHERE id BETWEEN 100 AND 150;"
        " INSERT INTO filtered_moment.t SELECT g, true, g - 1000 FROM generate_series(1001, 1100) g"
    )
    rest = await client.get(
        f"/chunked/filtered_moment.t?{query}&{urlencode({'after': head[-1], 'snapshot': snapshot})}", headers=auth
    )
    assert rest.status == 200, await rest.text()
    assert head + ids_of("ndjson", await rest.read()) == before
    # Without the snapshot, the resume reads the database as it is now.
    now = await client.get(f"/chunked/filtered_moment.t?{query}&after={head[-1]}", headers=auth)
    assert ids_of("ndjson", await now.read()) != before[len(head) :]
    assert json.loads(now.headers["X-Key"]) == ["id"]
