"""The page planner, pages(): keyset pages in id order, the small first page, the limit's budget, and what
an early stop leaves behind. Against the session's real table of ROWS rows."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from streaming_api.db.lanes import Lanes
from streaming_api.export.formats import FORMATS
from streaming_api.export.pages import PageQueries, encoded_chunks, pages
from streaming_api.export.request import Export
from tests.support.bodies import FORMATS as TEXT_FORMATS
from tests.support.bodies import body_ids
from tests.support.pg import ROWS

CAPACITY = 4


@dataclass
class Clock:
    db_seconds: float = 0.0


class CountingLanes(Lanes):
    """Lanes that count the pages started (one COPY each) on the connections they hand out."""

    def __init__(self, pool: asyncpg.Pool, capacity: int) -> None:
        super().__init__(pool, capacity)
        self.copies = 0

    @contextlib.asynccontextmanager
    async def connection(self, priority: int) -> AsyncIterator[asyncpg.Connection]:
        async with super().connection(priority) as conn:
            yield _Counted(conn, self)


class _Counted:
    def __init__(self, conn: asyncpg.Connection, lanes: CountingLanes) -> None:
        self._conn = conn
        self._lanes = lanes

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)

    async def copy_from_query(self, *args: object, **kwargs: object) -> str:
        self._lanes.copies += 1
        return await self._conn.copy_from_query(*args, **kwargs)


@pytest.fixture
async def lanes(database_url: str) -> AsyncIterator[CountingLanes]:
    pool = await asyncpg.create_pool(database_url, min_size=0, max_size=CAPACITY, server_settings={"TimeZone": "UTC"})
    try:
        yield CountingLanes(pool, CAPACITY)
    finally:
        await pool.close()


def _export(**changes: object) -> Export:
    values = {"format": FORMATS["ndjson"], "page_size": 1000, "first_page_size": 100, **changes}
    return Export(**values)  # type: ignore[arg-type]


async def _page_sizes(lanes: Lanes, export: Export) -> list[int]:
    return [page.rows async for page in pages(lanes, PageQueries(), export, Clock())]


async def test_pages_start_small_then_follow_page_size_to_the_end_of_the_table(lanes):
    assert await _page_sizes(lanes, _export()) == [100, 1000, 1000, ROWS - 2100]


async def test_pages_hold_the_rows_after_after_id_in_id_order(lanes):
    export = _export(after_id=1000, page_size=300, first_page_size=50)
    ids = []
    async for page in pages(lanes, PageQueries(), export, Clock()):
        ids.extend(body_ids("ndjson", page.body))
        assert len(body_ids("ndjson", page.body)) == page.rows
    assert ids == list(range(1001, ROWS + 1))


async def test_a_limit_is_spread_over_the_pages_and_ends_them(lanes):
    assert await _page_sizes(lanes, _export(limit=1500)) == [100, 1000, 400]
    assert await _page_sizes(lanes, _export(limit=100)) == [100]


async def test_no_rows_means_no_pages(lanes):
    assert await _page_sizes(lanes, _export(after_id=ROWS)) == []
    assert await _page_sizes(lanes, _export(limit=0)) == []


async def test_without_a_page_size_every_row_comes_in_one_page(lanes):
    assert await _page_sizes(lanes, _export(page_size=None, first_page_size=None)) == [ROWS]
    assert await _page_sizes(lanes, _export(page_size=None, first_page_size=None, limit=7)) == [7]


async def test_a_paused_consumer_has_at_most_depth_pages_started_ahead(lanes):
    source = pages(lanes, PageQueries(), _export(page_size=100), Clock(), depth=2)
    async with contextlib.aclosing(source):
        first = await anext(source)
        assert first.rows == 100
        # The first page is handed on before the next one starts; the pages ahead start as it is taken.
        await anext(source)
        assert lanes.copies <= 1 + 2
    assert lanes.free == CAPACITY


async def test_stopping_early_gives_every_connection_back(lanes):
    source = pages(lanes, PageQueries(), _export(page_size=200), Clock())
    async with contextlib.aclosing(source):
        async for _ in source:
            break
    assert lanes.free == CAPACITY
    assert lanes.pool.get_idle_size() == lanes.pool.get_size()


async def test_the_time_of_every_query_is_added_to_the_clock(lanes):
    clock = Clock()
    async for _ in pages(lanes, PageQueries(), _export(), clock):
        pass
    assert clock.db_seconds > 0


@pytest.mark.parametrize("fmt", TEXT_FORMATS)
async def test_chunks_carry_head_and_tail_once_around_the_pages(lanes, fmt):
    export = _export(format=FORMATS[fmt], limit=250, page_size=100, first_page_size=100)
    chunks = [chunk async for chunk in encoded_chunks(lanes, PageQueries(), export, Clock())]
    assert [chunk.rows for chunk in chunks if chunk.rows] == [100, 100, 50]
    body = b"".join(part for chunk in chunks for part in chunk.parts)
    assert body.startswith(FORMATS[fmt].layout().head)
    assert body.endswith(FORMATS[fmt].layout().tail)
    assert body_ids(fmt, body) == list(range(1, 251))


@contextlib.asynccontextmanager
async def _scratch(database_url: str, rows: str) -> AsyncIterator[tuple[Lanes, asyncpg.Connection]]:
    """Lanes onto a points table of its own (a schema on the search path) holding the session table's
    rows that match `rows` (SQL), and a connection to change it with."""
    admin = await asyncpg.connect(database_url)
    await admin.execute(
        "DROP SCHEMA IF EXISTS scratch CASCADE; CREATE SCHEMA scratch;"
        " CREATE TABLE scratch.points (LIKE public.points INCLUDING ALL);"
        f" INSERT INTO scratch.points SELECT * FROM public.points WHERE {rows}"
    )
    pool = await asyncpg.create_pool(
        database_url, min_size=0, max_size=CAPACITY, server_settings={"search_path": "scratch"}
    )
    try:
        yield Lanes(pool, CAPACITY), admin
    finally:
        await pool.close()
        await admin.execute("DROP SCHEMA scratch CASCADE")
        await admin.close()


async def _ids(lanes: Lanes, export: Export) -> list[list[int]]:
    return [body_ids("ndjson", page.body) async for page in pages(lanes, PageQueries(), export, Clock())]


def _flat(pages_ids: list[list[int]]) -> list[int]:
    return [i for page in pages_ids for i in page]


async def test_the_first_page_is_the_next_first_page_size_ids_fewer_rows_where_ids_have_gaps(database_url):
    async with _scratch(database_url, "id % 2 = 0") as (lanes, _):
        evens = list(range(2, ROWS + 1, 2))
        got = await _ids(lanes, _export())
        assert [len(page) for page in got] == [50, 1000, len(evens) - 1050]
        assert _flat(got) == evens
        # A limit counts the first page's rows, whatever their number.
        got = await _ids(lanes, _export(limit=120, page_size=40))
        assert [len(page) for page in got] == [20, 40, 40, 20]  # the first 40 ids hold 20 rows
        got = await _ids(lanes, _export(limit=75))
        assert _flat(got) == evens[:75]


async def test_a_first_page_that_falls_in_a_gap_is_skipped_and_the_rows_follow(database_url):
    async with _scratch(database_url, "id > 2000") as (lanes, _):
        got = await _ids(lanes, _export(limit=300))
        assert _flat(got) == list(range(2001, 2301))


async def test_rows_written_inside_a_planned_range_come_with_the_rows_there_not_instead(database_url):
    """An export is not a snapshot, but a row that is there throughout is sent, exactly once: rows given
    ids inside pages already planned (explicit ids, say) come on top of them, never push them out."""
    written = list(range(1301, 1800, 2))  # inside pages 7 to 9 of 100 even ids each
    async with _scratch(database_url, "id % 2 = 0") as (lanes, admin):
        source = pages(lanes, PageQueries(), _export(page_size=100), Clock(), depth=2)
        async with contextlib.aclosing(source):
            ids = body_ids("ndjson", (await anext(source)).body) + body_ids("ndjson", (await anext(source)).body)
            # The first window is planned now, and no page past the fourth has started.
            await admin.execute(
                "INSERT INTO scratch.points SELECT * FROM public.points WHERE id = ANY($1::bigint[])", written
            )
            async for page in source:
                ids.extend(body_ids("ndjson", page.body))
    assert ids == sorted([*range(2, ROWS + 1, 2), *written])
