"""Filters in the export layer: the query's syntax (PostgREST's operators, in-lists and their quoting,
like's star, is's keywords, quoted column names), which values are checked here and which by PostgreSQL,
the SQL they become (identifiers from the catalog, PostgreSQL's own literals cast to the column's type),
and pages that hold page_size filtered rows (the plans carry the filter)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import pytest
from multidict import MultiDict

from streaming_api.db import filters
from streaming_api.db.catalog import Table
from streaming_api.db.filters import Filter, FilterError, Where
from streaming_api.db.lanes import Lanes
from streaming_api.export.count import RowCount
from streaming_api.export.pages import pages
from streaming_api.export.request import BadParameter, parse_export
from tests.support.filtered import ROWS, Wanted, oracle
from tests.support.tables import export_of, reflected

RESERVED = frozenset({"format", "limit", "after", "after_id", "columns", "snapshot", "page_size", "token"})


@dataclass
class Clock:
    db_seconds: float = 0.0


@pytest.fixture
async def pool(filtered_url: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(filtered_url, min_size=0, max_size=4, server_settings={"TimeZone": "UTC"})
    yield pool
    await pool.close()


@pytest.fixture
async def things(pool: asyncpg.Pool) -> Table:
    async with pool.acquire() as conn:
        return await reflected(conn, "things")


def _parsed(things: Table, *pairs: tuple[str, str]) -> tuple[Filter, ...]:
    return parse_export(MultiDict(pairs), things, None, {"format"}, 7, 100, reserved=RESERVED).filters


def _one(things: Table, name: str, raw: str) -> Filter:
    (parsed,) = _parsed(things, (name, raw))
    return parsed


def test_an_operator_and_its_value(things):
    assert _one(things, "note", "eq.a.b,c") == Filter("note", "note", "eq", False, ("a.b,c",))
    assert _one(things, "note", "not.neq.") == Filter("note", "note", "neq", True, ("",))
    assert _one(things, "$1", "gte.-5") == Filter("$1", "$1", "gte", False, ("-5",), ("-5",))


def test_in_lists_quote_items_with_commas_parentheses_and_quotes(things):
    parsed = _one(things, "note", 'in.(a,"b,c","d)(",""," e ","say \\"hi\\"","back\\\\slash",)')
    assert parsed.values == ("a", "b,c", "d)(", "", " e ", 'say "hi"', "back\\slash", "")
    assert _one(things, "note", "in.()").values == ()
    assert _one(things, "note", "in.(,)").values == ("", "")


@pytest.mark.parametrize("raw", ['in.("a', 'in.("a"b)', "in.a,b", "in.(a", "in."])
def test_a_broken_in_list_is_refused(things, raw):
    with pytest.raises(BadParameter) as refused:
        _one(things, "note", raw)
    assert refused.value.name == "note" and refused.value.extra == {"column": "note", "type": "text"}


def test_like_takes_a_star_for_any_characters_and_a_backslash_for_a_literal_one(things):
    assert _one(things, "note", "like.*a_b%c*").values == ("%a_b%c%",)
    assert _one(things, "note", "ilike.star\\*light").values == ("star\\*light",)
    assert _one(things, "note", "like.a\\\\*").values == ("a\\\\%",)
    with pytest.raises(BadParameter, match="lone backslash"):
        _one(things, "note", "like.a\\")


def test_is_takes_its_keywords_and_true_false_unknown_only_on_a_boolean(things):
    assert _one(things, "score", "not.is.null") == Filter("score", "score", "is", True, ("null",), ("null",))
    assert _one(things, "flag", "is.unknown").checked
    with pytest.raises(BadParameter, match="boolean"):
        _one(things, "score", "is.true")
    with pytest.raises(BadParameter, match="is takes one of"):
        _one(things, "flag", "is.maybe")


@pytest.mark.parametrize("raw", ["eq", "equals.1", "not.1", "not.not.eq.1", "NOT.eq.1", "Eq.1", ".eq.1", ""])
def test_what_is_not_an_operator_is_refused(things, raw):
    with pytest.raises(BadParameter, match="operator one of"):
        _one(things, "note", raw)


def test_plain_numbers_are_checked_here_anything_else_by_postgresql(things):
    assert _one(things, "id", "in.(1,-2,007)").literals == ("1", "-2", "7")
    assert _one(things, "id", "eq.9223372036854775807").literals == ("9223372036854775807",)
    for raw in ("eq.9223372036854775808", "eq. 7", "eq.1_000", "eq.0x1F", "eq.١٢", "eq.1.0"):
        assert not _one(things, "id", raw).checked, raw
    assert not _one(things, "$1", "eq.3000000000").checked  # past int4
    # A double's or a numeric's plain decimal text, quoted as it is (nothing in it to escape).
    assert _one(things, "score", "in.(1,-2.5,.5,1e3,1.5E-7)").literals == ("'1'", "'-2.5'", "'.5'", "'1e3'", "'1.5E-7'")
    assert _one(things, '"with space"', "gt.1e999").literals == ("'1e999'",)
    for raw in ("eq.1e309", "eq.1e-400", "eq.NaN", "eq.Infinity", "eq. 1", "eq.1e", "eq.0x1"):
        assert not _one(things, "score", raw).checked, raw


def test_a_column_named_like_a_parameter_is_filtered_in_double_quotes(things):
    assert _one(things, '"limit"', "eq.2").column == "limit"
    assert _one(things, '"note"', "eq.x").column == "note"
    assert _one(things, 'it\'s "quoted"', "eq.x").column == 'it\'s "quoted"'
    assert _one(things, '"it\'s ""quoted"""', "eq.x").column == 'it\'s "quoted"'
    export = parse_export(MultiDict(limit="2"), things, None, {"format", "limit"}, 7, 100, reserved=RESERVED)
    assert export.limit == 2 and export.filters == ()


@pytest.mark.parametrize("name", ["nothing", '"nothing"', '"limit', "ID", '"a"b"'])
def test_a_name_that_is_no_column_is_refused_by_its_name(things, name):
    with pytest.raises(BadParameter) as refused:
        _one(things, name, "eq.1")
    assert refused.value.name == name


def test_the_same_column_may_be_filtered_again_and_every_filter_counts(things):
    parsed = _parsed(things, ("id", "gt.1"), ("id", "lt.9"), ("note", "is.null"), ("id", "neq.5"))
    assert [(f.column, f.operator) for f in parsed] == [("id", "gt"), ("id", "lt"), ("id", "neq"), ("note", "is")]


def test_filters_checked_here_alone_need_no_statement(things):
    export = parse_export(MultiDict(id="gt.5", flag="is.true"), things, None, {"format"}, 7, 100, reserved=RESERVED)
    assert export.where is not None and export.where_sql is not None
    export = parse_export(MultiDict(score="gt.5"), things, None, {"format"}, 7, 100, reserved=RESERVED)
    assert export.where is not None
    export = parse_export(MultiDict(at="gt.2026-01-02"), things, None, {"format"}, 7, 100, reserved=RESERVED)
    assert export.where is None


async def test_postgresql_writes_each_value_as_its_own_literal(pool, things):
    raw = _parsed(
        things,
        ("note", "eq.it's a \\ back'slash"),
        ("score", "gte. 1e1"),
        ("at", "lt.2026-01-03 01:00+01"),
        ("note", "like.*' OR 1=1 --*"),
    )
    async with pool.acquire() as conn:
        checked = await filters.check(conn, things, raw)
    # (Grouped by parameter, in the order the parameters first came.)
    assert [f.literals for f in checked] == [
        ("E'it''s a \\\\ back''slash'",),
        ("'%'' OR 1=1 --%'",),
        ("'10'",),
        ("'2026-01-03 00:00:00+00'",),
    ]
    sql = Where(things, checked).sql
    assert '"public"."things"."note" = CAST(E\'it\'\'s a \\\\ back\'\'slash\' AS "pg_catalog"."text")' in sql
    assert 'CAST(\'10\' AS "pg_catalog"."float8")' in sql
    assert "LIKE '%'' OR 1=1 --%'" in sql


async def test_a_value_postgresql_cannot_read_names_its_parameter_and_type(pool, things):
    raw = _parsed(things, ("score", "gt.1"), ('"with space"', "lt.lots"), ("note", "eq.fine"))
    async with pool.acquire() as conn:
        with pytest.raises(FilterError) as refused:
            await filters.check(conn, things, raw)
    assert refused.value.parameter == '"with space"'
    assert "numeric" in refused.value.detail and "lots" in refused.value.detail


async def test_an_operator_the_type_lacks_is_refused_before_the_export(pool, things):
    async with pool.acquire() as conn:
        with pytest.raises(FilterError, match="operator does not exist") as refused:
            await filters.check(conn, things, _parsed(things, ("doc", "eq.{}")))
    assert refused.value.parameter == "doc"


async def test_the_sql_names_columns_as_the_catalog_does_however_odd(pool, things):
    raw = _parsed(things, ("$1", "eq.3"), ('it\'s "quoted"', "eq.q1"), ("ünïcode ✓", "gt.2026-01-02"))
    async with pool.acquire() as conn:
        where = Where(things, await filters.check(conn, things, raw))
        assert '"public"."things"."$1" = CAST(3 AS "pg_catalog"."int4")' in where.sql
        assert '"public"."things"."it\'s ""quoted""" = ' in where.sql
        assert 't."ünïcode ✓" > ' in where.plan_sql
        count = await conn.fetchval(f"SELECT count(*) FROM things WHERE {where.sql}")
        wanted = [Wanted("$1", "eq", ("3",)), Wanted('it\'s "quoted"', "eq", ("q1",))]
        assert count == len(await oracle(conn, [*wanted, Wanted("ünïcode ✓", "gt", ("2026-01-02",))]))


@pytest.mark.parametrize(
    ("pairs", "floor"),
    [
        ([("id", "gt.100")], 100),
        ([("id", "gte.100")], 99),
        ([("id", "eq.42")], 41),
        ([("id", "in.(50,7)")], 6),
        ([("id", "gt.3"), ("id", "gte.200")], 199),
        ([("id", "not.gt.100")], None),
        ([("id", "lt.100")], None),
        ([("$1", "gt.3")], None),
    ],
)
def test_the_filters_on_an_integer_key_say_where_its_first_id_range_starts(things, pairs, floor):
    assert Where(things, _parsed(things, *pairs)).key_floor() == floor


async def _page_rows(pool: asyncpg.Pool, things: Table, **changes: object) -> list[int]:
    export = export_of(things, page_size=7, first_page_size=3, **changes)
    return [piece.rows async for piece in pages(Lanes(pool, 4), export, Clock(), smallest_key=1) if piece.ends_page]


async def test_pages_hold_page_size_filtered_rows_the_plans_skipping_what_the_filter_leaves_out(pool, things):
    raw = _parsed(things, ("$1", "not.in.(3,9,15)"))  # 3 rows in every 17 left out
    where = Where(things, raw)
    async with pool.acquire() as conn:
        kept = len(await oracle(conn, [Wanted("$1", "in", ("3", "9", "15"), negated=True)]))
    sizes = await _page_rows(pool, things, filters=raw, where=where)
    # The first page: the first ids (3 of them, whatever the filter keeps); then 7 kept rows a page.
    assert sum(sizes) == kept < ROWS - 40
    assert sizes[1:-1] == [7] * (len(sizes) - 2) and 0 < sizes[-1] <= 7
    assert len(sizes) > 32  # more than one plan


class PlanRecorder(Lanes):
    """Lanes that keep the text of every plan (a statement fetched, not a COPY) run on them."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        super().__init__(pool, 4)
        self.plans: list[str] = []

    @contextlib.asynccontextmanager
    async def connection(self, priority: int) -> AsyncIterator[asyncpg.Connection]:
        async with super().connection(priority) as conn:
            yield _Recording(conn, self.plans)


class _Recording:
    def __init__(self, conn: asyncpg.Connection, plans: list[str]) -> None:
        self._conn, self._plans = conn, plans

    def __getattr__(self, name: str) -> object:
        return getattr(self._conn, name)

    async def prepare(self, sql: str, **kwargs: object) -> object:
        self._plans.append(sql)
        return await self._conn.prepare(sql, **kwargs)


async def _planned(pool, things, pairs, estimated_rows, fmt="arrow", **changes):
    """(the plans' SQL, the rows) of a filtered export whose row estimate says `estimated_rows` (in Arrow,
    whose whole pages are planned; a text format's may be id ranges)."""
    raw = _parsed(things, *pairs)
    lanes = PlanRecorder(pool)
    export = export_of(things, fmt, page_size=7, first_page_size=3, filters=raw, where=Where(things, raw), **changes)
    done = asyncio.get_running_loop().create_future()
    done.set_result(RowCount(estimated_rows, False))
    rows = 0
    async for piece in pages(lanes, export, Clock(), smallest_key=1, expected=done):
        rows += piece.rows
    return lanes.plans, rows


async def test_the_plans_of_a_filter_that_keeps_nearly_every_row_walk_the_key_alone(pool, things):
    plans, rows = await _planned(pool, things, [("$1", "neq.3")], ROWS)
    assert plans and not any('"$1"' in plan for plan in plans)
    async with pool.acquire() as conn:
        assert rows == len(await oracle(conn, [Wanted("$1", "neq", ("3",))]))


async def test_the_plans_of_a_filter_that_keeps_a_tenth_walk_it_in_windows_of_a_tenth(pool, things):
    plans, rows = await _planned(pool, things, [("$1", "lt.4")], ROWS // 10)
    assert plans and all('"$1" < ' in plan for plan in plans)
    async with pool.acquire() as conn:
        assert rows == len(await oracle(conn, [Wanted("$1", "lt", ("4",))]))
    # PLAN_PAGES (32) x a tenth: windows of 4 pages.
    assert all("WHERE b.k < 4)" in plan for plan in plans)


async def test_a_limit_keeps_the_filter_in_the_plans_whatever_it_is_estimated_to_keep(pool, things):
    plans, rows = await _planned(pool, things, [("$1", "neq.3")], ROWS, limit=100)
    assert plans and all('"$1" <> ' in plan for plan in plans)
    assert rows == 100


async def test_an_estimate_given_up_leaves_the_plans_their_default_window(pool, things):
    raw = _parsed(things, ("$1", "lt.4"))
    lanes = PlanRecorder(pool)
    export = export_of(things, page_size=7, first_page_size=3, filters=raw, where=Where(things, raw))
    given_up = asyncio.get_running_loop().create_future()
    given_up.cancel()
    rows = sum([piece.rows async for piece in pages(lanes, export, Clock(), smallest_key=1, expected=given_up)])
    async with pool.acquire() as conn:
        assert rows == len(await oracle(conn, [Wanted("$1", "lt", ("4",))]))
    assert lanes.plans and all("WHERE b.k < 4)" in plan for plan in lanes.plans)


async def _ranged(pool, things, pairs, estimated_rows):
    """(the plans' SQL, each page's rows) of a filtered NDJSON export whose row estimate says `estimated_rows`."""
    async with pool.acquire() as conn:
        raw = await filters.check(conn, things, _parsed(things, *pairs))
    lanes = PlanRecorder(pool)
    export = export_of(things, page_size=7, first_page_size=3, filters=raw, where=Where(things, raw))
    done = asyncio.get_running_loop().create_future()
    done.set_result(RowCount(estimated_rows, False))
    source = pages(lanes, export, Clock(), smallest_key=1, expected=done)
    return lanes.plans, [piece.rows async for piece in source if piece.ends_page]


async def test_a_text_export_filtered_to_a_tenth_takes_id_ranges_and_no_plan(pool, things):
    plans, sizes = await _ranged(pool, things, [("$1", "lt.4")], ROWS // 10)
    assert plans == []
    async with pool.acquire() as conn:
        assert sum(sizes) == len(await oracle(conn, [Wanted("$1", "lt", ("4",))]))
    # Ranges of about 7 kept rows each (the first page aside): sized by the estimate, then by what came.
    assert 0.5 * 7 <= sum(sizes[1:]) / len(sizes[1:]) <= 2 * 7


async def test_id_ranges_follow_a_filter_whose_rows_are_all_at_the_end(pool, things):
    # "with space" grows with id: the rows kept are the last ids, none before; the estimate says a tenth.
    pairs = [('"with space"', "gt.350")]
    plans, sizes = await _ranged(pool, things, pairs, ROWS // 10)
    async with pool.acquire() as conn:
        kept = await oracle(conn, [Wanted("with space", "gt", ("350",))])
    assert plans == [] and sum(sizes) == len(kept) > 0
    assert len(sizes) < 40  # ranges grew across the ids that kept nothing


async def test_a_filter_estimated_to_keep_nothing_reads_the_rest_in_one_page(pool, things):
    plans, sizes = await _ranged(pool, things, [("note", "eq.plain note")], 0)
    async with pool.acquire() as conn:
        kept = len(await oracle(conn, [Wanted("note", "eq", ("plain note",))]))
    # The first page (3 ids, an empty one sends nothing), then every id after it in one.
    assert plans == [] and sum(sizes) == kept > 7 and len(sizes) <= 2
