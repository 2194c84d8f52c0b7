"""format=arrow, read back by pyarrow and polars (never by the service's code): the same table as the CSV's
values, typed; both endpoints; batches per page; an aborted stream visibly incomplete."""

from __future__ import annotations

import datetime as dt
import io
import subprocess
import sys
from urllib.parse import parse_qsl

import aiohttp
import polars as pl
import pyarrow as pa
import pyarrow.ipc
import pytest
from multidict import MultiDict

from streaming_api.db.catalog import Column, PgType, Table
from streaming_api.export.request import parse_export
from streaming_api.settings import PROJECT_ROOT
from tests.support.bodies import ENDPOINTS, raw_rows
from tests.support.pg import ROWS, while_the_database_fails
from tests.support.running import running

ARROW = "application/vnd.apache.arrow.stream"
END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"
TYPES = {
    "id": pa.int64(),
    "x": pa.float64(),
    "y": pa.float64(),
    "label": pa.utf8(),
    "value": pa.float64(),
    "recorded_at": pa.timestamp("us", tz="UTC"),
}


async def _get(client, path: str, auth: dict[str, str], **headers: str) -> tuple[aiohttp.ClientResponse, bytes]:
    response = await client.get(path, headers={**auth, **headers})
    return response, await response.read()


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_arrow_carries_the_whole_table_typed_as_the_csv_says(client, auth, endpoint):
    response, body = await _get(client, f"/{endpoint}?format=arrow", auth)
    assert response.status == 200
    assert response.headers["Content-Type"] == ARROW
    table = pa.ipc.open_stream(body).read_all()
    assert table.num_rows == ROWS
    assert {field.name: field.type for field in table.schema} == TYPES
    _, csv_body = await _get(client, f"/{endpoint}?format=csv", auth)
    csv = raw_rows("csv", csv_body)
    arrow_rows = table.to_pylist()
    for index in (0, 100, 201, ROWS - 1):  # row 101 holds the label that needs escaping everywhere
        expected, got = csv[index], arrow_rows[index]
        assert got["id"] == int(expected["id"])
        assert got["x"] == float(expected["x"])
        assert got["y"] == float(expected["y"])
        assert got["value"] == float(expected["value"])
        assert got["label"] == expected["label"]
        assert got["recorded_at"] == dt.datetime.fromisoformat(expected["recorded_at"])
    assert arrow_rows[100]["label"] == 'Zürich, "north"\tline\ntwo \\ ✓'
    assert table.column("id").to_pylist() == list(range(1, ROWS + 1))


async def test_both_endpoints_carry_the_same_table(client, auth):
    _, chunked = await _get(client, "/chunked?format=arrow", auth)
    _, standard = await _get(client, "/standard?format=arrow", auth)
    assert pa.ipc.open_stream(chunked).read_all().equals(pa.ipc.open_stream(standard).read_all())


async def test_chunked_sends_one_record_batch_per_page_the_small_first_page_too(client, auth, settings):
    _, body = await _get(client, "/chunked?format=arrow&page_size=500", auth)
    sizes = [batch.num_rows for batch in pa.ipc.open_stream(body)]
    assert sizes[0] == settings.first_page_size
    assert sizes[1:-1] == [500] * (len(sizes) - 2)
    assert sum(sizes) == ROWS
    assert body.endswith(END_OF_STREAM)


async def test_chunked_arrow_pages_hold_arrow_page_size_rows_without_page_size(settings, auth):
    async with running(settings.replace(arrow_page_size=700)) as server:
        response = await server.session.get(f"{server.url}/chunked?format=arrow", headers=auth)
        body = await response.read()
    sizes = [batch.num_rows for batch in pa.ipc.open_stream(body)]
    assert sizes == [settings.first_page_size, 700, 700, 700, ROWS - settings.first_page_size - 2100]


async def test_max_page_size_caps_arrows_page_size_without_refusing_to_start(settings, auth):
    async with running(settings.replace(max_page_size=800, page_size=800)) as server:
        response = await server.session.get(f"{server.url}/chunked?format=arrow", headers=auth)
        body = await response.read()
    sizes = [batch.num_rows for batch in pa.ipc.open_stream(body)]
    assert sizes == [settings.first_page_size, 800, 800, ROWS - settings.first_page_size - 1600]


@pytest.mark.parametrize(
    ("query", "row_bytes", "page_size"),
    [
        ("format=arrow", None, 700),
        # About a sixteenth of page_bytes: 8 MB / 16 / 1,000 bytes a row.
        ("format=arrow", 1000.0, 524),
        ("format=arrow", 10.0, 700),
        ("format=arrow&page_size=300", 1000.0, 300),
        ("format=ndjson", 1000.0, 1000),
    ],
)
def test_arrow_pages_default_to_their_own_size_and_every_other_format_to_page_size(query, row_bytes, page_size):
    int8 = PgType(20, "pg_catalog", "int8", "b", "N")
    columns = (Column("id", int8, -1, False, "bigint"),)
    table = Table(1, "public", "points", "table", True, columns, ("id",), row_bytes=row_bytes)
    allowed = {"format", "page_size"}
    export = parse_export(
        MultiDict(parse_qsl(query)), table, None, allowed, 1000, 10_000, page_bytes=8 << 20, whole_page_size=700
    )
    assert export.page_size == page_size


async def test_polars_reads_the_stream(client, auth):
    _, body = await _get(client, "/chunked.arrow?after_id=2000&limit=100", auth)
    frame = pl.read_ipc_stream(io.BytesIO(body))
    assert frame.height == 100
    assert frame["id"].to_list() == list(range(2001, 2101))
    assert frame.schema["recorded_at"] == pl.Datetime("us", "UTC")


async def test_accept_chooses_arrow(client, auth):
    response, body = await _get(client, "/chunked?limit=3", auth, Accept=ARROW)
    assert response.headers["Content-Type"] == ARROW
    assert pa.ipc.open_stream(body).read_all().num_rows == 3


@pytest.mark.parametrize(("query", "rows"), [("after_id=2300", ROWS - 2300), ("limit=0", 0), (f"after_id={ROWS}", 0)])
async def test_after_id_and_limit_work_as_for_the_other_formats(client, auth, query, rows):
    _, body = await _get(client, f"/chunked?format=arrow&{query}", auth)
    table = pa.ipc.open_stream(body).read_all()
    assert table.num_rows == rows
    assert table.schema.names == list(TYPES)


async def test_an_aborted_arrow_stream_has_no_end_of_stream_marker(big_settings, big_url, auth):
    async with running(big_settings) as server, aiohttp.ClientSession() as session:
        response = await session.get(f"{server.url}/chunked?format=arrow", headers=auth)
        received = bytearray()

        async def read() -> None:
            async for data in response.content.iter_any():
                received.extend(data)

        with pytest.raises(aiohttp.ClientPayloadError):
            await while_the_database_fails(big_url, read())
    assert not received.endswith(END_OF_STREAM)


def test_without_pyarrow_arrow_is_a_406_naming_what_to_install():
    # sys.modules[name] = None makes `import name` fail, as on a server installed without the arrow extra.
    code = (
        "import json, sys; sys.modules['pyarrow'] = None\n"
        "from multidict import MultiDict\n"
        "from streaming_api.db.catalog import Column, PgType, Table\n"
        "from streaming_api.export.request import FormatUnavailable, parse_export\n"
        "from streaming_api.web import problems\n"
        "int8 = PgType(20, 'pg_catalog', 'int8', 'b', 'N')\n"
        "table = Table(1, 'public', 'points', 'table', True, (Column('id', int8, -1, False, 'bigint'),), ('id',))\n"
        "try:\n"
        "    parse_export(MultiDict(format='arrow'), table, None, {'format'}, None, 10_000)\n"
        "except FormatUnavailable as exc:\n"
        "    error = problems.format_unavailable(exc.format)\n"
        "    print(error.status, json.loads(error.text)['error'], json.loads(error.text)['detail'])\n"
        "parse_export(MultiDict(format='csv'), table, None, {'format'}, None, 10_000)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == (
        "406 format_unavailable this server cannot write arrow: it needs pyarrow (pip install 'streaming_api[arrow]')"
    )


async def test_what_the_readme_says_holds_one_batch_against_one_per_page_the_same_table(client, auth):
    """The text formats are byte-identical across endpoints; Arrow is not, and the README says so: /standard
    is one record batch, /chunked one per page, and the tables they make are equal."""
    _, chunked = await _get(client, "/chunked?format=arrow", auth)
    _, standard = await _get(client, "/standard?format=arrow", auth)
    assert chunked != standard
    assert len(list(pa.ipc.open_stream(standard))) == 1
    assert len(list(pa.ipc.open_stream(chunked))) > 1
    assert pa.ipc.open_stream(chunked).read_all().equals(pa.ipc.open_stream(standard).read_all())
