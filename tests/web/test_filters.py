"""Filters over HTTP: PostgREST's operators on columns of every kind of name and type, on both endpoints,
both routes, every format, HEAD and the row count, and each problem a 400 that names its parameter."""

from __future__ import annotations

import json
from urllib.parse import quote

import asyncpg
import pytest
from openapi_spec_validator import validate

from streaming_api.web.app import create_app
from tests.support import filtered
from tests.support.filtered import Wanted, ids_of, oracle

FORMATS = ("ndjson", "csv", "json", "text", "arrow")
ENDPOINTS = ("chunked", "standard")

# One filter of each operator and each kind of column (names with $, quotes, a space, non-ASCII, "limit").
EACH = [
    [Wanted("id", "gt", ("250",))],
    [Wanted("id", "gte", ("100",)), Wanted("id", "lt", ("120",))],
    [Wanted("$1", "eq", ("3",))],
    [Wanted("$1", "neq", ("3",))],
    [Wanted('it\'s "quoted"', "eq", ("q1's",))],
    [Wanted("with space", "lte", ("50.5",))],
    [Wanted("ünïcode ✓", "gt", ("2026-01-20",))],
    [Wanted("limit", "eq", ("2",))],
    [Wanted("flag", "is", ("true",))],
    [Wanted("flag", "is", ("false",))],
    [Wanted("flag", "is", ("unknown",))],
    [Wanted("flag", "is", ("null",), negated=True)],
    [Wanted("score", "is", ("not_null",))],
    [Wanted("note", "like", ("%OR%",))],
    [Wanted("note", "ilike", ("%zÜRICH%",))],
    [Wanted("note", "like", ("star\\*light",))],
    [Wanted("note", "like", ("100\\%%",))],
    [Wanted("note", "like", ("under\\_%",))],
    [Wanted("note", "eq", ("'; DELETE FROM canary; --",))],
    [Wanted("note", "in", ("a,b),(c", "1 OR 1=1", '"; DROP TABLE things; --'))],
    [Wanted("note", "like", ("%a%",), negated=True)],
    [Wanted("at", "lt", ("2026-01-03 00:00:00+00",))],
    [Wanted("score", "gte", ("10",))],
    [Wanted("mood", "eq", ("happy",))],
    [Wanted("mood", "in", ("sad", "ok"), negated=True)],
    [Wanted("amount", "gt", ("45",))],
    [Wanted("tags", "eq", ("{t1,u}",))],
    [Wanted("id", "in", ())],
    [Wanted("id", "in", ("1", "2", "3", "299"), negated=True)],
    [Wanted("id", "gt", ("9223372036854775806",))],
    [Wanted("id", "gte", ("-9223372036854775808",)), Wanted("$1", "lt", ("5",)), Wanted("flag", "is", ("true",))],
]


def _ids(name: str) -> str:
    return "-".join(f"{w.column}.{'not.' if w.negated else ''}{w.operator}" for w in name)


@pytest.fixture
async def conn(filtered_url):
    connection = await asyncpg.connect(filtered_url)
    yield connection
    await connection.close()


@pytest.mark.parametrize("wanted", EACH, ids=_ids)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_each_operator_keeps_exactly_the_rows_it_means(filtered_client, auth, conn, endpoint, wanted):
    response = await filtered_client.get(f"/{endpoint}/things?{filtered.query(wanted, format='ndjson')}", headers=auth)
    assert response.status == 200, await response.text()
    assert ids_of("ndjson", await response.read()) == await oracle(conn, wanted)


WIDE = [Wanted("note", "like", ("%O%",), negated=True), Wanted("$1", "gte", ("2",)), Wanted("mood", "neq", ("ok",))]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_every_format_carries_the_filtered_rows(filtered_client, auth, conn, endpoint, fmt):
    expected = await oracle(conn, WIDE)
    assert 50 < len(expected) < filtered.ROWS - 50  # many pages, and rows left out of most of them
    response = await filtered_client.get(f"/{endpoint}/things?{filtered.query(WIDE, format=fmt)}", headers=auth)
    assert response.status == 200, await response.text()
    assert ids_of(fmt, await response.read()) == expected


@pytest.mark.parametrize("fmt", ["csv", "arrow"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_a_view_without_a_key_is_filtered_too(filtered_client, auth, conn, endpoint, fmt):
    response = await filtered_client.get(f"/{endpoint}/things_view?{filtered.query(WIDE, format=fmt)}", headers=auth)
    assert response.status == 200, await response.text()
    assert sorted(ids_of(fmt, await response.read())) == await oracle(conn, WIDE, filtered.VIEW)


async def test_the_default_table_route_is_filtered_like_the_named_one(filtered_client, auth):
    query = filtered.query(WIDE, format="csv")
    default = await filtered_client.get(f"/chunked?{query}", headers=auth)
    named = await filtered_client.get(f"/chunked/things.csv?{filtered.query(WIDE)}", headers=auth)
    assert default.status == named.status == 200
    assert await default.read() == await named.read()


async def test_filters_combine_with_columns_and_limit(filtered_client, auth, conn):
    expected = (await oracle(conn, WIDE))[:40]
    response = await filtered_client.get(
        f"/chunked/things?{filtered.query(WIDE, columns='id,note', limit='40')}", headers=auth
    )
    body = await response.read()
    assert ids_of("ndjson", body) == expected
    assert set(json.loads(body.split(b"\n")[0])) == {"id", "note"}


async def test_chunked_row_count_is_the_planners_estimate_of_the_filtered_rows(filtered_client, auth, conn):
    path = f"/chunked/things?{filtered.query(WIDE)}"
    get = await filtered_client.get(path, headers=auth)
    head = await filtered_client.head(path, headers=auth)
    await get.read()
    assert "X-Row-Count" not in get.headers
    estimate = int(get.headers["X-Row-Count-Estimate"])
    assert head.headers["X-Row-Count-Estimate"] == str(estimate)
    # What PostgreSQL's planner says of the same condition (not a count: the table has 300 rows).
    condition = "NOT note LIKE '%O%' AND \"$1\" >= 2 AND mood <> 'ok'"
    plan = json.loads(await conn.fetchval(f"EXPLAIN (FORMAT JSON) SELECT 1 FROM things WHERE {condition}"))
    assert estimate == round(plan[0]["Plan"]["Plan Rows"])
    assert estimate < filtered.ROWS


async def test_standard_head_counts_the_filtered_rows_exactly_as_its_get(filtered_client, auth, conn):
    path = f"/standard/things?{filtered.query(WIDE)}"
    head = await filtered_client.head(path, headers=auth)
    get = await filtered_client.get(path, headers=auth)
    rows = len(await oracle(conn, WIDE))
    assert head.headers["X-Row-Count"] == get.headers["X-Row-Count"] == str(rows)
    assert {k: v for k, v in head.headers.items() if k not in ("Date", "Content-Length", "Server-Timing")} == {
        k: v for k, v in get.headers.items() if k not in ("Date", "Content-Length", "Server-Timing")
    }


async def test_standard_refuses_a_filtered_export_over_its_cap_and_serves_one_under(
    aiohttp_client, filtered_settings, auth, conn
):
    client = await aiohttp_client(create_app(filtered_settings.replace(standard_max_rows=100)))
    over = await client.get(f"/standard/things?{filtered.query([Wanted('id', 'gt', ('50',))])}", headers=auth)
    assert over.status == 413 and (await over.json())["error"] == "too_many_rows"
    under = [Wanted("$1", "eq", ("4",))]
    response = await client.get(f"/standard/things?{filtered.query(under)}", headers=auth)
    assert response.status == 200
    assert ids_of("ndjson", await response.read()) == await oracle(conn, under)


@pytest.mark.parametrize(
    ("query", "parameter", "says"),
    [
        ("score=eq.abc", "score", "double precision"),
        ("at=gt.yesterday-ish", "at", "timestamp with time zone"),
        ("id=eq.1.5", "id", "bigint"),
        ("id=in.(1,x)", "id", "bigint"),
        ("%22limit%22=eq.two", '"limit"', "integer"),
        ("mood=eq.angry", "mood", "mood"),
        ("amount=eq.x", "amount", "positive"),
        ("doc=eq.%7B%7D", "doc", "json"),
        ("id=like.1*", "id", "text column"),
        ("score=is.true", "score", "boolean column"),
        ("note=like.a%5C", "note", "lone backslash"),
        ("note=eq.a%00b", "note", "NUL"),
        ("note=in.(%22a,b)", "note", "not closed"),
        ("note=in.a,b", "note", "parentheses"),
        ("note=is.nothing", "note", "is takes one of"),
        ("note=similar.x", "note", "operator one of"),
        ("note=hello", "note", "operator one of"),
        ("note=not.not.eq.x", "note", "operator one of"),
        ("nothing=eq.1", "nothing", "neither a parameter"),
        ("%22nothing%22=eq.1", '"nothing"', "names no column"),
        ("limit=eq.2", "limit", "integer"),
        ("page_size=eq.2", "page_size", "integer"),
    ],
)
async def test_a_bad_filter_is_a_400_naming_its_parameter(filtered_client, auth, query, parameter, says):
    response = await filtered_client.get(f"/chunked/things?{query}", headers=auth)
    assert response.status == 400, await response.text()
    body = await response.json()
    assert body["error"] == "bad_parameter" and body["parameter"] == parameter
    assert says in body["detail"]


async def test_a_bad_value_names_the_column_and_its_type_in_the_body(filtered_client, auth):
    response = await filtered_client.get("/standard/things?%22with%20space%22=gt.lots", headers=auth)
    body = await response.json()
    assert (body["parameter"], body["column"], body["type"]) == ('"with space"', "with space", "numeric(10,2)")


async def test_a_filter_on_a_column_named_like_a_parameter_is_quoted(filtered_client, auth, conn):
    response = await filtered_client.get("/chunked/things?%22limit%22=eq.2&limit=10", headers=auth)
    assert ids_of("ndjson", await response.read()) == (await oracle(conn, [Wanted("limit", "eq", ("2",))]))[:10]


async def test_a_reserved_parameter_given_twice_is_still_a_400(filtered_client, auth):
    response = await filtered_client.get("/chunked/things?limit=1&limit=2", headers=auth)
    assert response.status == 400 and (await response.json())["parameter"] == "limit"


async def test_a_filter_repeated_on_one_column_is_anded(filtered_client, auth, conn):
    wanted = [Wanted("id", "gt", ("10",)), Wanted("id", "lte", ("20",)), Wanted("id", "neq", ("15",))]
    response = await filtered_client.get(f"/chunked/things?{filtered.query(wanted)}", headers=auth)
    assert ids_of("ndjson", await response.read()) == [i for i in range(11, 21) if i != 15]


async def test_a_filter_on_the_key_starts_where_the_key_filter_does(filtered_client, auth):
    # 3 rows, far from the table's first ids: the first page is their range, whatever the first page's size.
    response = await filtered_client.get("/chunked/things?id=gte.290&id=lt.293", headers=auth)
    assert ids_of("ndjson", await response.read()) == [290, 291, 292]


async def test_openapi_lists_a_filter_for_every_column(filtered_client, auth):
    document = await (await filtered_client.get("/openapi.json", headers=auth)).json()
    validate(document)
    operation = document["paths"]["/chunked/things"]["get"]
    names = {parameter["name"] for parameter in operation["parameters"]}
    assert {"id", "$1", 'it\'s "quoted"', "with space", "ünïcode ✓", '"limit"', "limit", "note"} <= names


async def test_a_filtered_resume_after_a_key_gives_the_rest(filtered_client, auth, conn):
    expected = await oracle(conn, WIDE)
    after = expected[len(expected) // 2]
    response = await filtered_client.get(f"/chunked/things?{filtered.query(WIDE, after=str(after))}", headers=auth)
    assert ids_of("ndjson", await response.read()) == expected[len(expected) // 2 + 1 :]


async def test_a_path_the_filter_names_percent_encoded_keeps_its_meaning(filtered_client, auth, conn):
    """A column name with a quote and a space, percent-encoded as any client would."""
    wanted = [Wanted('it\'s "quoted"', "like", ("q_'s",))]
    name = quote('it\'s "quoted"', safe="")
    response = await filtered_client.get(f"/chunked/things?{name}=like.q_%27s", headers=auth)
    assert ids_of("ndjson", await response.read()) == await oracle(conn, wanted)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_head_refuses_a_bad_filter_as_its_get_does(filtered_client, auth, endpoint):
    head = await filtered_client.head(f"/{endpoint}/things?score=gt.high", headers=auth)
    get = await filtered_client.get(f"/{endpoint}/things?score=gt.high", headers=auth)
    assert head.status == get.status == 400
    assert (await get.json())["parameter"] == "score"
