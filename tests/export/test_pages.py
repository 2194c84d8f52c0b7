"""The page planner, pages(): keyset pages in key order (any key: an integer, text, uuid, several columns),
the small first page, the limit's budget, pages bounded in bytes, relations without a key, and what an
early stop leaves behind. Against real tables in the session's PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest

from streaming_api.db.catalog import Table
from streaming_api.db.lanes import Lanes, Output
from streaming_api.export.formats import FORMATS
from streaming_api.export.pages import encoded_chunks, pages
from streaming_api.export.request import Export
from tests.support.bodies import FORMATS as TEXT_FORMATS
from tests.support.bodies import body_ids
from tests.support.pg import ROWS
from tests.support.tables import export_of, reflected

CAPACITY = 4


@dataclass
class Clock:
    db_seconds: float = 0.0


class CountingLanes(Lanes):
    """Lanes that count the pages started (one COPY each)."""

    def __init__(self, pool: asyncpg.Pool, capacity: int) -> None:
        super().__init__(pool, capacity)
        self.copies = 0

    async def copy(self, priority: int, statement: str, output: Output, long: bool = False) -> str:
        self.copies += 1
        return await super().copy(priority, statement, output, long)


async def _pool(url: str, search_path: str | None = None) -> asyncpg.Pool:
    settings = {"TimeZone": "UTC", **({"search_path": search_path} if search_path else {})}
    return await asyncpg.create_pool(url, min_size=0, max_size=CAPACITY, server_settings=settings)


@pytest.fixture
async def lanes(database_url: str) -> AsyncIterator[CountingLanes]:
    pool = await _pool(database_url)
    try:
        yield CountingLanes(pool, CAPACITY)
    finally:
        await pool.close()


@pytest.fixture
async def points(lanes: CountingLanes) -> Table:
    async with lanes.pool.acquire() as conn:
        return await reflected(conn)


async def _pages(lanes: Lanes, export: Export) -> list[tuple[int, bytes]]:
    """(rows, output) of each page, its pieces joined."""
    found: list[tuple[int, bytes]] = []
    pending = b""
    async for piece in pages(lanes, export, Clock(), smallest_key=_smallest(export.table)):
        pending += piece.data
        if piece.ends_page:
            found.append((piece.rows, pending))
            pending = b""
    assert pending == b""
    return found


def _smallest(served: Table) -> int | None:
    return None if served.key_range is None else served.key_range[0]


async def _page_sizes(lanes: Lanes, export: Export) -> list[int]:
    return [rows for rows, _ in await _pages(lanes, export)]


async def test_pages_start_small_then_follow_page_size_to_the_end_of_the_table(lanes, points):
    assert await _page_sizes(lanes, export_of(points)) == [100, 1000, 1000, ROWS - 2100]


async def test_pages_hold_the_rows_after_after_in_key_order(lanes, points):
    export = export_of(points, after_id=1000, page_size=300, first_page_size=50)
    ids = []
    for rows, body in await _pages(lanes, export):
        assert len(body_ids("ndjson", body)) == rows
        ids.extend(body_ids("ndjson", body))
    assert ids == list(range(1001, ROWS + 1))


async def test_a_limit_is_spread_over_the_pages_and_ends_them(lanes, points):
    assert await _page_sizes(lanes, export_of(points, limit=1500)) == [100, 1000, 400]
    assert await _page_sizes(lanes, export_of(points, limit=100)) == [100]


async def test_no_rows_means_no_pages(lanes, points):
    assert await _page_sizes(lanes, export_of(points, after_id=ROWS)) == []
    assert await _page_sizes(lanes, export_of(points, limit=0)) == []


async def test_without_a_page_size_every_row_comes_in_one_page(lanes, points):
    assert await _page_sizes(lanes, export_of(points, page_size=None, first_page_size=None)) == [ROWS]
    assert await _page_sizes(lanes, export_of(points, page_size=None, first_page_size=None, limit=7)) == [7]


async def test_a_paused_consumer_has_at_most_depth_pages_started_ahead(lanes, points):
    source = pages(lanes, export_of(points, page_size=100), Clock(), depth=2, smallest_key=1)
    async with contextlib.aclosing(source):
        first = await anext(source)
        while not first.ends_page:
            first = await anext(source)
        assert first.rows == 100
        # The first page is handed on before the next one starts; the pages ahead start as it is taken.
        await anext(source)
        assert lanes.copies <= 1 + 2
    assert lanes.free == CAPACITY


async def test_stopping_early_gives_every_connection_back(lanes, points):
    source = pages(lanes, export_of(points, page_size=200), Clock())
    async with contextlib.aclosing(source):
        async for _ in source:
            break
    assert lanes.free == CAPACITY
    assert lanes.pool.get_idle_size() == lanes.pool.get_size()


async def test_the_time_of_every_query_is_added_to_the_clock(lanes, points):
    clock = Clock()
    async for _ in pages(lanes, export_of(points), clock):
        pass
    assert clock.db_seconds > 0


@pytest.mark.parametrize("fmt", TEXT_FORMATS)
async def test_chunks_carry_head_and_tail_once_around_the_pages(lanes, points, fmt):
    export = export_of(points, fmt, limit=250, page_size=100, first_page_size=100)
    chunks = [chunk async for chunk in encoded_chunks(lanes, export, Clock(), smallest_key=1)]
    assert sum(chunk.rows for chunk in chunks) == 250
    body = b"".join(part for chunk in chunks for part in chunk.parts)
    layout = FORMATS[fmt].layout(points, points.names)
    assert body.startswith(layout.head)
    assert body.endswith(layout.tail)
    assert body_ids(fmt, body) == list(range(1, 251))


@contextlib.asynccontextmanager
async def _scratch(database_url: str, rows: str) -> AsyncIterator[tuple[Lanes, Table, asyncpg.Connection]]:
    """Lanes onto a points table of its own (a schema on the search path) holding the session table's
    rows that match `rows` (SQL), the table as reflected, and a connection to change it with."""
    admin = await asyncpg.connect(database_url)
    await admin.execute(
        "DROP SCHEMA IF EXISTS scratch CASCADE; CREATE SCHEMA scratch;"
        " CREATE TABLE scratch.points (LIKE public.points INCLUDING ALL);"
        f" INSERT INTO scratch.points SELECT * FROM public.points WHERE {rows}; ANALYZE scratch.points"
    )
    pool = await _pool(database_url, "scratch")
    try:
        async with pool.acquire() as conn:
            served = await reflected(conn)
        assert served.schema == "scratch"
        yield Lanes(pool, CAPACITY), served, admin
    finally:
        await pool.close()
        await admin.execute("DROP SCHEMA scratch CASCADE")
        await admin.close()


async def _ids(lanes: Lanes, export: Export) -> list[list[int]]:
    return [body_ids("ndjson", body) for _, body in await _pages(lanes, export)]


def _flat(pages_ids: list[list[int]]) -> list[int]:
    return [i for page in pages_ids for i in page]


async def test_the_first_page_is_the_next_first_page_size_ids_fewer_rows_where_ids_have_gaps(database_url):
    async with _scratch(database_url, "id % 2 = 0") as (lanes, served, _):
        evens = list(range(2, ROWS + 1, 2))
        got = await _ids(lanes, export_of(served, after_id=0))
        assert [len(page) for page in got] == [50, 1000, len(evens) - 1050]
        assert _flat(got) == evens
        # A limit counts the first page's rows, whatever their number.
        got = await _ids(lanes, export_of(served, after_id=0, limit=120, page_size=40))
        assert [len(page) for page in got] == [20, 40, 40, 20]  # the first 40 ids hold 20 rows
        got = await _ids(lanes, export_of(served, limit=75))
        assert _flat(got) == evens[:75]


async def test_a_first_page_that_falls_in_a_gap_is_skipped_and_the_rows_follow(database_url):
    async with _scratch(database_url, "id > 2000") as (lanes, served, _):
        got = await _ids(lanes, export_of(served, after_id=0, limit=300))
        assert _flat(got) == list(range(2001, 2301))


async def test_without_after_the_first_page_starts_at_the_smallest_id(database_url):
    async with _scratch(database_url, "id > 2000") as (lanes, served, _):
        got = await _ids(lanes, export_of(served, limit=300))
        assert len(got[0]) == 100  # the 100 ids after the smallest, not an empty range from 0
        assert _flat(got) == list(range(2001, 2301))


async def test_rows_written_inside_a_planned_range_come_with_the_rows_there_not_instead(database_url):
    """An export is not a snapshot, but a row that is there throughout is sent, exactly once: rows given
    ids inside pages already planned (explicit ids, say) come on top of them, never push them out."""
    written = list(range(1301, 1800, 2))  # inside pages 7 to 9 of 100 even ids each
    async with _scratch(database_url, "id % 2 = 0") as (lanes, served, admin):
        export = export_of(served, after_id=0, page_size=100)
        source = pages(lanes, export, Clock(), depth=2)
        body = b""
        done = 0
        async with contextlib.aclosing(source):
            async for piece in source:
                body += piece.data
                done += piece.ends_page
                if done == 2 and piece.ends_page:
                    # The first window is planned now, and no page past the fourth has started.
                    await admin.execute(
                        "INSERT INTO scratch.points SELECT * FROM public.points WHERE id = ANY($1::bigint[])", written
                    )
    assert body_ids("ndjson", body) == sorted([*range(2, ROWS + 1, 2), *written])


# --- keys that are not one integer ----------------------------------------------------------------


@pytest.fixture
async def keyed(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A schema of tables keyed by text, by uuid, by two columns, and without a key."""
    admin = await asyncpg.connect(database_url)
    await admin.execute(
        """
        DROP SCHEMA IF EXISTS keyed CASCADE; CREATE SCHEMA keyed;
        CREATE TABLE keyed.by_text (code text PRIMARY KEY, n int NOT NULL);
        INSERT INTO keyed.by_text SELECT 'code-' || lpad(g::text, 5, '0'), g FROM generate_series(1, 2345) g;
        CREATE TABLE keyed.by_uuid (u uuid PRIMARY KEY, n int NOT NULL);
        INSERT INTO keyed.by_uuid SELECT md5(g::text)::uuid, g FROM generate_series(1, 2345) g;
        CREATE TABLE keyed.by_two (tenant text NOT NULL, seq int NOT NULL, n int NOT NULL, PRIMARY KEY (tenant, seq));
        INSERT INTO keyed.by_two SELECT 't' || (g % 7), g, g FROM generate_series(1, 2345) g;
        CREATE TABLE keyed.no_key (n int);
        INSERT INTO keyed.no_key SELECT g FROM generate_series(1, 2345) g;
        CREATE VIEW keyed.a_view AS SELECT n, n * 2 AS twice FROM keyed.by_two;
        ANALYZE keyed.by_text, keyed.by_uuid, keyed.by_two, keyed.no_key;
        """
    )
    try:
        yield admin
    finally:
        await admin.execute("DROP SCHEMA keyed CASCADE")
        await admin.close()


async def _numbers(lanes: Lanes, export: Export) -> tuple[list[int], list[int]]:
    """The n of every row, and the rows of each page."""
    found = await _pages(lanes, export)
    import json

    numbers = [json.loads(line)["n"] for _, body in found for line in body.splitlines()]
    return numbers, [rows for rows, _ in found]


@pytest.mark.parametrize(
    ("table", "order"),
    [
        ("keyed.by_text", "code"),
        ("keyed.by_uuid", "u"),
        ("keyed.by_two", "tenant, seq"),
    ],
)
async def test_any_key_pages_every_row_once_in_key_order(lanes, keyed, table, order):
    served = await reflected(keyed, table)
    assert served.key == tuple(name.strip() for name in order.split(","))
    expected = [record["n"] for record in await keyed.fetch(f"SELECT n FROM {table} ORDER BY {order}")]
    numbers, sizes = await _numbers(lanes, export_of(served, page_size=500))
    assert numbers == expected
    assert sizes[0] == 100 and max(sizes) == 500 and sum(sizes) == 2345
    # Resuming after a key value in the middle gives exactly the rest.
    middle = await keyed.fetchrow(f"SELECT {order} FROM {table} ORDER BY {order} OFFSET 999 LIMIT 1")
    literals = tuple(
        await keyed.fetchrow(
            "SELECT " + ", ".join(f"quote_literal(${i + 1}::text)" for i in range(len(middle))),
            *map(str, middle.values()),
        )
    )
    numbers, _ = await _numbers(lanes, export_of(served, after=literals, page_size=300))
    assert numbers == expected[1000:]
    numbers, _ = await _numbers(lanes, export_of(served, after=literals, limit=123))
    assert numbers == expected[1000:1123]


@pytest.mark.parametrize("table", ["keyed.no_key", "keyed.a_view"])
async def test_a_relation_without_a_key_is_one_page_of_every_row(lanes, keyed, table):
    served = await reflected(keyed, table)
    assert served.key == ()
    numbers, sizes = await _numbers(lanes, export_of(served))
    assert sizes == [2345] and sorted(numbers) == sorted(r[0] for r in await keyed.fetch(f"SELECT n FROM {table}"))


@pytest.mark.parametrize("table", ["keyed.no_key", "keyed.a_view"])
async def test_arrow_without_a_key_comes_a_batch_at_a_time_from_a_cursor(lanes, keyed, table):
    pa = pytest.importorskip("pyarrow")
    served = await reflected(keyed, table)
    export = export_of(served, "arrow")
    layout = export.layout
    batches = [piece async for piece in pages(lanes, export, Clock())]
    assert [piece.rows for piece in batches] == [1000, 1000, 345]
    stream = layout.head + b"".join(piece.data for piece in batches) + layout.tail
    got = pa.ipc.open_stream(stream).read_all()
    assert sorted(got.column("n").to_pylist()) == sorted(r[0] for r in await keyed.fetch(f"SELECT n FROM {table}"))
    assert lanes.free == CAPACITY


# --- rows that weigh a lot ------------------------------------------------------------------------


async def test_wide_rows_make_small_pages_and_a_page_streams_in_pieces(lanes, keyed):
    """Rows of 1 MB: pages hold about page_bytes of them, the plan adds up their bytes, and a page's
    output comes in pieces as it arrives (never a whole page held before it is passed on)."""
    await keyed.execute(
        "CREATE TABLE keyed.wide (id int PRIMARY KEY, payload text NOT NULL);"
        " INSERT INTO keyed.wide SELECT g, repeat(md5(g::text), 32768) FROM generate_series(1, 40) g;"
        " ANALYZE keyed.wide"
    )
    served = await reflected(keyed, "keyed.wide")
    assert served.row_bytes is not None and served.row_bytes > 1_000_000
    export = export_of(served, page_bytes=4 << 20)
    pieces = [piece async for piece in pages(lanes, export, Clock(), smallest_key=1)]
    sizes = [piece.rows for piece in pieces if piece.ends_page]
    assert sum(sizes) == 40 and max(sizes) <= 4  # 4 MB of 1 MB rows
    # Passed on as it arrives: a piece is at most what a page may hold while it waits (and one more read).
    assert max(len(piece.data) for piece in pieces) <= (4 << 20) + (1 << 20)
    assert len([p for p in pieces if not p.ends_page]) > len(sizes)
