"""Safe SQL: injection attempts in every parameter (filter values, operators, column names, table names, the
resume key and the endpoints' own parameters) never change which rows come back beyond what the filter
means, are answered 4xx with a JSON body (never a 500), and leave the database as it was: the canary
table's rows, no write or DDL in the audit (triggers and event triggers record them), the same relations,
functions and roles."""

from __future__ import annotations

import json
from datetime import date
from urllib.parse import quote, urlencode

import asyncpg
import pytest
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from tests.support import filtered
from tests.support.filtered import INJECTIONS, NAMES, Unreadable, Wanted, ids_of, oracle, replace_unescaped

FORMATS = ("ndjson", "csv", "json", "arrow")
# What a row of canary holds: no body may ever carry it.
SECRETS = (b"the canary", b"is alive")
OPERATORS = ("eq", "neq", "gt", "gte", "lt", "lte", "in", "is", "like", "ilike")
IS_KEYWORDS = ("null", "not_null", "true", "false", "unknown")
TEXTS = st.text(max_size=12)
VALUES = st.one_of(
    st.sampled_from(INJECTIONS + filtered.NOTES),
    st.integers(min_value=-10, max_value=400).map(str),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(("2026-01-05", "2026-01-05 10:00+00", "true", "happy", "{t1,u}", " 7", "0x1F", "1_000", "NaN")),
    st.sampled_from(("-0", "1e400", "q1's", "Infinity", "{}", "[]", "null", "(1,2)")),
    TEXTS,
)


# Values each column's type reads (so that many generated filters are valid, and keep some rows).
PLAUSIBLE = {
    "id": st.integers(min_value=-1, max_value=310).map(str),
    "$1": st.integers(min_value=-1, max_value=18).map(str),
    'it\'s "quoted"': st.sampled_from([f"q{i}{s}" for i in range(7) for s in ("", "'s")]),
    "with space": st.decimals(min_value=0, max_value=420, places=2).map(str),
    "ünïcode ✓": st.dates(min_value=date(2025, 12, 30), max_value=date(2026, 2, 12)).map(str),
    "limit": st.integers(min_value=0, max_value=5).map(str),
    "flag": st.sampled_from(("true", "false", "t", "no")),
    "note": st.sampled_from(filtered.NOTES),
    "at": st.integers(min_value=0, max_value=320).map(lambda h: f"2026-01-{1 + h // 24:02d} {h % 24:02d}:00:00+00"),
    "score": st.floats(min_value=-1, max_value=40).map(repr),
    "mood": st.sampled_from(("sad", "ok", "happy")),
    "amount": st.integers(min_value=0, max_value=51).map(str),
    "tags": st.sampled_from(("{t1,u}", "{t0,u}", "{}")),
    "doc": st.sampled_from(('{"g": 1}', "{}")),
}
TEXT_COLUMNS = ("note", 'it\'s "quoted"')


def _escape_stars(pattern: str) -> str:
    """A LIKE pattern whose every unescaped * is escaped: * is PostgREST's %, so a literal star is \\*."""
    return replace_unescaped(pattern, "*", "\\*")


@st.composite
def wanted(draw: st.DrawFn) -> Wanted:
    operator = draw(st.sampled_from(OPERATORS))
    likes = operator in ("like", "ilike")
    column = draw(st.sampled_from(TEXT_COLUMNS) if likes and draw(st.booleans()) else st.sampled_from(NAMES))
    negated = draw(st.booleans())
    # Mostly what the column's type reads; else anything (injections, other types' values, any text).
    value = st.one_of(PLAUSIBLE[column], PLAUSIBLE[column], PLAUSIBLE[column], VALUES)
    if operator == "is":
        values: tuple[str, ...] = (draw(st.sampled_from(IS_KEYWORDS)),)
    elif operator == "in":
        values = tuple(draw(st.lists(value, max_size=4)))
    elif likes:
        pattern = st.text(alphabet="q1's%_\\*\"", max_size=6)
        values = (_escape_stars(draw(st.one_of(pattern, pattern, value))),)
    else:
        values = (draw(value),)
    return Wanted(column, operator, values, negated)


@pytest.fixture
async def conn(filtered_url):
    connection = await asyncpg.connect(filtered_url)
    yield connection
    await connection.close()


@pytest.fixture(scope="module")
def untouched(filtered_url) -> tuple:
    """The database as it was before this module's requests."""
    import asyncio

    return asyncio.run(filtered.fingerprint(filtered_url))


async def _still_untouched(conn: asyncpg.Connection) -> None:
    assert await conn.fetch("SELECT what FROM audit") == []
    assert [tuple(r) for r in await conn.fetch("SELECT * FROM canary ORDER BY id")] == [
        (1, "the canary"),
        (2, "is alive"),
    ]


def _assert_problem(status: int, body: bytes) -> dict:
    assert 400 <= status < 500, (status, body[:300])
    problem = json.loads(body)
    assert problem["error"] and problem["detail"]
    return problem


@hypothesis_settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    filters=st.lists(wanted(), min_size=1, max_size=3),
    endpoint=st.sampled_from(("chunked", "standard")),
    fmt=st.sampled_from(FORMATS),
)
async def test_a_filter_gives_exactly_its_rows_or_a_400_never_more(
    filtered_client, auth, conn, untouched, filters, endpoint, fmt
):
    try:
        expected: list[int] | None = await oracle(conn, filters)
    except Unreadable:
        expected = None  # PostgreSQL cannot read a value as its column's type, or has no such operator
    query = urlencode([(w.parameter(), w.text()) for w in filters] + [("format", fmt)])
    response = await filtered_client.get(f"/{endpoint}/things?{query}", headers=auth)
    body = await response.read()
    event(f"{response.status}")
    if expected is None:
        problem = _assert_problem(response.status, body)
        assert response.status == 400 and problem["error"] in ("bad_parameter", "bad_filter"), problem
    else:
        assert response.status == 200, body[:500]
        assert ids_of(fmt, body) == expected
        assert not any(secret in body for secret in SECRETS)
    await _still_untouched(conn)


def _positions(attempt: str) -> list[str]:
    """The attempt in every place a request carries text: the endpoints' parameters, a filter's value,
    operator and column, a column list, the resume key, the table's name and its suffix."""
    quoted = quote(attempt, safe="")
    as_column = '"' + attempt + '"'
    return [
        *(f"/chunked/things?{urlencode({name: attempt})}" for name in filtered_parameters()),
        *(f"/standard/things?{urlencode({name: attempt})}" for name in ("format", "limit", "after", "columns")),
        f"/chunked/things?{urlencode({'note': 'eq.' + attempt})}",
        f"/chunked/things?{urlencode({'note': 'in.(' + attempt + ')'})}",
        f"/chunked/things?{urlencode({'note': 'like.' + attempt})}",
        f"/chunked/things?{urlencode({'id': attempt})}",
        f"/chunked/things?{urlencode({'id': attempt + '.1'})}",
        f"/chunked/things?{urlencode({'note': 'not.' + attempt})}",
        f"/chunked/things?{urlencode({attempt: 'eq.1'})}",
        f"/chunked/things?{urlencode({as_column: 'eq.1'})}",
        f"/chunked/things?{urlencode({'columns': 'id,' + attempt})}",
        f"/chunked/things?{urlencode({'after': json.dumps([attempt])})}",
        f"/chunked/things_view?{urlencode({'after': attempt})}",
        f"/chunked/{quoted}",
        f"/standard/{quoted}?id=eq.1",
        f"/chunked/things.{quoted}",
        f"/chunked/things?snapshot=primary:{quoted}",
    ]


def filtered_parameters() -> tuple[str, ...]:
    return ("format", "limit", "after", "after_id", "columns", "snapshot", "page_size", "token")


async def test_every_attempt_in_every_place_is_refused_or_means_only_itself(filtered_client, auth, conn, untouched):
    answered: dict[int, int] = {}
    for attempt in INJECTIONS:
        for path in _positions(attempt):
            response = await filtered_client.get(path, headers=auth)
            body = await response.read()
            answered[response.status] = answered.get(response.status, 0) + 1
            assert not any(secret in body for secret in SECRETS), path
            if response.status == 200:
                continue
            _assert_problem(response.status, body)
    # The attempts that are filters' values are answered with their rows: eq finds the note that holds it.
    for attempt in INJECTIONS:
        wanted = [Wanted("note", "eq", (attempt,))]
        response = await filtered_client.get(f"/chunked/things?{urlencode({'note': 'eq.' + attempt})}", headers=auth)
        assert ids_of("ndjson", await response.read()) == await oracle(conn, wanted)
        assert (attempt == "") or len(await oracle(conn, wanted)) >= 1
    assert set(answered) <= {200, 400, 404}, answered
    await _still_untouched(conn)


@hypothesis_settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(attempt=st.one_of(st.sampled_from(INJECTIONS), st.text(max_size=16)), place=st.integers(min_value=0))
async def test_any_text_anywhere_is_never_a_500(filtered_client, auth, conn, untouched, attempt, place):
    positions = _positions(attempt)
    response = await filtered_client.get(positions[place % len(positions)], headers=auth)
    body = await response.read()
    event(f"{response.status}")
    assert not any(secret in body for secret in SECRETS)
    if response.status != 200:
        _assert_problem(response.status, body)
    await _still_untouched(conn)


async def test_the_database_is_as_it_was(filtered_url, untouched):
    """Last in the module: the canary, the audit, every table's rows, the relations, functions and roles."""
    assert await filtered.fingerprint(filtered_url) == untouched
