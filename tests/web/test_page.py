"""The browser page: served without a token, and driven in real headless Chromium (Debian's package) over the
DevTools protocol (tests/support/chromium.py).

The browser tests read their own schema, seeded with PAGE_ROWS rows (PAGE_TEST_ROWS overrides it),
so /standard has real work to do before its first byte, and serve beside `points` the tables of a second
schema: one of other types, one whose name needs quoting. PAGE_SCREENSHOT names where the "Run both"
screenshot goes (default: the test's tmp dir); docs/page.png is one taken with 500,000 rows:

    PAGE_TEST_ROWS=500000 PAGE_SCREENSHOT=docs/page.png .venv/bin/python -m pytest tests/web/test_page.py -k run_both
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from streaming_api.db.schema import seed
from streaming_api.names import url_name
from streaming_api.settings import Settings
from streaming_api.web.app import create_app
from tests.support.chromium import CHROMIUM, Page, launch

PAGE_ROWS = int(os.environ.get("PAGE_TEST_ROWS", "50000"))
PAGE_SCHEMA = "page_test"
# Served beside points (not on the search_path, so their URL names are schema-qualified).
OTHER_SCHEMA = "page_test_other"
KINDS_TABLE = "kinds"
KINDS_ROWS = 3_000
KINDS_COLUMNS = ["code", "amount", "ratio", "flag", "tags", "doc", "note", "maybe", "seen", "raw"]
QUOTED_TABLE = 'Odd "name" ü.x'
QUOTED_ROWS = 1_500
# Bounded waits in the browser, in seconds: far above what a run takes, so only a hang trips them.
RUN_DEADLINE_SECONDS = 300 if PAGE_ROWS > 100_000 else 60
in_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"needs {CHROMIUM} (apt-get install chromium; .ci/run does)"
)
ALL_PANELS_FINISHED = """() => [...document.querySelectorAll('.panel')]
    .every((panel) => panel.dataset.state === 'done' || panel.dataset.state === 'error')"""
TABLES_LISTED = "() => document.querySelector('#table').dataset.state === 'loaded'"


async def test_page_is_served_without_a_token(client):
    response = await client.get("/")
    assert response.status == 200
    assert response.content_type == "text/html"
    assert "Run both" in await response.text()


@pytest.mark.parametrize("path", ["/static/app.js", "/static/style.css"])
async def test_page_assets_are_served_without_a_token(client, path):
    response = await client.get(path)
    assert response.status == 200


async def test_page_allows_only_its_own_scripts(client):
    response = await client.get("/")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


# --- in Chromium ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def page_database_url(database_url: str) -> str:
    """The session's PostgreSQL, its own schema holding PAGE_ROWS rows (search_path rides in the URL)."""
    asyncio.run(_seed_schema(database_url, PAGE_ROWS))
    return f"{database_url}{'&' if '?' in database_url else '?'}search_path={PAGE_SCHEMA}"


async def _seed_schema(url: str, rows: int) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {PAGE_SCHEMA}")
        await conn.execute(f"SET search_path TO {PAGE_SCHEMA}")
        await seed(conn, rows)
        await _create_other_tables(conn)
    finally:
        await conn.close()


async def _create_other_tables(conn: asyncpg.Connection) -> None:
    """A table of other types than points' (a uuid key, NULLs, NaN, arrays, json, markup in text), and one
    whose name holds a quote, a space, a dot and a non-ASCII letter."""
    quoted = '"' + QUOTED_TABLE.replace('"', '""') + '"'
    await conn.execute(
        f"""
        DROP SCHEMA IF EXISTS {OTHER_SCHEMA} CASCADE;
        CREATE SCHEMA {OTHER_SCHEMA};
        CREATE TABLE {OTHER_SCHEMA}.{KINDS_TABLE} (
            code uuid PRIMARY KEY, amount numeric(12, 2), ratio real, flag boolean, tags text[], doc jsonb,
            note text NOT NULL, maybe integer, seen timestamptz, raw bytea
        );
        INSERT INTO {OTHER_SCHEMA}.{KINDS_TABLE}
        SELECT md5(i::text)::uuid, i * 1.25, CASE WHEN i % 7 = 0 THEN 'NaN' ELSE i / 3.0 END, i % 2 = 0,
               ARRAY['a', NULL, i::text], jsonb_build_object('i', i, 'where', 'Zürich "north"'),
               '<b>row</b> ' || i, CASE WHEN i % 3 = 0 THEN i END,
               timestamptz '2026-01-01 00:00:00+00' + i * interval '1 minute', decode(md5(i::text), 'hex')
        FROM generate_series(1, {KINDS_ROWS}) AS i;
        CREATE TABLE {OTHER_SCHEMA}.{quoted} (id integer PRIMARY KEY, "Wert €" double precision, "a, b" text);
        INSERT INTO {OTHER_SCHEMA}.{quoted} SELECT i, i / 8.0, 'line ' || i FROM generate_series(1, {QUOTED_ROWS}) AS i;
        ANALYZE {OTHER_SCHEMA}.{KINDS_TABLE};
        ANALYZE {OTHER_SCHEMA}.{quoted};
        """
    )


@pytest.fixture
async def page_server(aiohttp_server, settings: Settings, page_database_url: str) -> TestServer:
    # Every pool connection open before the run, so neither endpoint pays for a new one mid-race.
    page_settings = settings.replace(
        database_url=page_database_url,
        rows=PAGE_ROWS,
        pool_min_size=4,
        pool_max_size=4,
        tables=("points", f"{OTHER_SCHEMA}.*"),
    )
    return await aiohttp_server(create_app(page_settings))


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    async with launch() as browser:
        yield await browser.new_page(width=1360, height=1000)


async def _panels(page: Page) -> dict[str, dict[str, str]]:
    return await page.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('.panel')].map((p) => [p.id, {...p.dataset}]))"
    )


def _assert_both_received(panels: dict[str, dict[str, str]], rows: int) -> None:
    assert panels["standard"]["state"] == panels["chunked"]["state"] == "done", panels
    assert int(panels["standard"]["rows"]) == int(panels["chunked"]["rows"]) == rows


@in_chromium
async def test_run_both_receives_every_row_and_chunked_starts_first(page, page_server, token, tmp_path):
    await page.goto(str(page_server.make_url(f"/#token={token}")))
    await page.click("#run-both")
    await page.wait_for_function(ALL_PANELS_FINISHED, within=RUN_DEADLINE_SECONDS)
    panels = await _panels(page)
    await page.screenshot(Path(os.environ.get("PAGE_SCREENSHOT") or tmp_path / "page.png"))
    _assert_both_received(panels, PAGE_ROWS)
    assert float(panels["chunked"]["ttfbMs"]) < float(panels["standard"]["ttfbMs"])
    assert panels["standard"]["view"] == panels["chunked"]["view"] == "picture"
    # No row is kept but the few the preview shows.
    assert await page.evaluate("() => panels.map((panel) => panel.kept.length)") == [5, 5]
    assert page.errors == []


async def _run_both_on(page: Page, server: TestServer, token: str, table: str) -> dict[str, dict[str, str]]:
    """Open the page, choose `table` in the picker, run both, and return the panels once both finished."""
    await page.goto(str(server.make_url(f"/#token={token}")))
    await page.wait_for_function(TABLES_LISTED, within=RUN_DEADLINE_SECONDS)
    await page.select("#table", table)
    await page.click("#run-both")
    await page.wait_for_function(ALL_PANELS_FINISHED, within=RUN_DEADLINE_SECONDS)
    return await _panels(page)


async def _preview(page: Page, panel: str) -> dict[str, list]:
    return await page.evaluate(
        f"""() => {{
            const preview = document.querySelector('#{panel} .preview');
            return {{
                names: [...preview.querySelectorAll('th')].map((th) => th.textContent),
                cells: [...preview.querySelectorAll('tbody tr')].map((tr) => [...tr.cells].map((td) => td.textContent)),
                elements: [...preview.querySelectorAll('tbody td *')].map((element) => element.tagName),
            }};
        }}"""
    )


@in_chromium
async def test_the_picker_lists_the_served_tables_with_the_default_first(page, page_server, token):
    await page.goto(str(page_server.make_url(f"/#token={token}")))
    await page.wait_for_function(TABLES_LISTED, within=RUN_DEADLINE_SECONDS)
    options = await page.evaluate("() => [...document.querySelector('#table').options].map((option) => option.value)")
    assert sorted(options) == sorted(
        [
            "points",
            url_name(OTHER_SCHEMA, KINDS_TABLE, qualified=True),
            url_name(OTHER_SCHEMA, QUOTED_TABLE, qualified=True),
        ]
    )
    assert await page.evaluate("() => document.querySelector('#table').value") == "points"


@in_chromium
async def test_run_both_on_a_table_of_other_types_receives_its_every_row(page, page_server, token):
    kinds = url_name(OTHER_SCHEMA, KINDS_TABLE, qualified=True)
    panels = await _run_both_on(page, page_server, token, kinds)
    _assert_both_received(panels, KINDS_ROWS)
    assert panels["standard"]["table"] == panels["chunked"]["table"] == kinds
    # No x and y: the panels fill a bar, and show the first rows under their column names.
    assert panels["standard"]["view"] == panels["chunked"]["view"] == "bar"
    for panel in ("standard", "chunked"):
        preview = await _preview(page, panel)
        assert preview["names"] == KINDS_COLUMNS
        assert len(preview["cells"]) == 5
    assert page.errors == []


@in_chromium
async def test_the_preview_shows_values_as_text_never_as_markup(page, page_server, token):
    await _run_both_on(page, page_server, token, url_name(OTHER_SCHEMA, KINDS_TABLE, qualified=True))
    preview = await _preview(page, "chunked")
    notes = [row[KINDS_COLUMNS.index("note")] for row in preview["cells"]]
    assert all(note.startswith("<b>row</b> ") for note in notes), notes
    assert preview["elements"] == []


@in_chromium
async def test_run_both_on_a_table_whose_name_needs_quoting(page, page_server, token):
    quoted = url_name(OTHER_SCHEMA, QUOTED_TABLE, qualified=True)
    panels = await _run_both_on(page, page_server, token, quoted)
    _assert_both_received(panels, QUOTED_ROWS)
    assert (await _preview(page, "chunked"))["names"] == ["id", "Wert €", "a, b"]
    assert page.errors == []


@in_chromium
async def test_page_says_how_to_get_a_token_on_401(page, page_server):
    await page.goto(str(page_server.make_url("/#token=not.a.token")))
    await page.click("#run-both")
    await page.wait_for_function(ALL_PANELS_FINISHED, within=RUN_DEADLINE_SECONDS)
    message = await page.inner_text("#message")
    assert "refused the token" in message
    assert "python run.py token" in message


@in_chromium
async def test_page_moves_the_token_from_the_address_bar_to_session_storage(page, page_server, token):
    await page.goto(str(page_server.make_url(f"/#token={token}")))
    assert "token" not in await page.url()
    assert await page.evaluate("() => sessionStorage.getItem('streaming_api.token')") == token


@in_chromium
async def test_a_script_error_on_the_page_is_seen(page, page_server):
    """The error collection the run_both test relies on is not vacuous."""
    await page.goto(str(page_server.make_url("/")))
    await page.evaluate("() => { setTimeout(() => { throw new Error('planted'); }); }")
    await page.wait_for_function("() => new Promise((done) => setTimeout(() => done(true), 50))", within=10)
    assert any("planted" in error for error in page.errors)


@in_chromium
async def test_a_panel_shows_how_much_of_the_announced_count_arrived(page, page_server, token):
    await page.goto(str(page_server.make_url(f"/#token={token}")))
    await page.click("#standard .run")  # /standard always announces its exact count
    await page.wait_for_function(
        "() => document.querySelector('#standard').dataset.state !== 'running'", within=RUN_DEADLINE_SECONDS
    )
    panels = await _panels(page)
    assert panels["standard"]["expected"] == str(PAGE_ROWS)
    assert await page.inner_text("#standard [data-counter=done]") == "100%"


@in_chromium
@pytest.mark.parametrize(("exact", "texts"), [(True, ["25%", "3.00 s"]), (False, ["~25%", "~3.00 s"])])
async def test_the_share_done_and_the_time_left_follow_the_count(page, page_server, exact, texts):
    await page.goto(str(page_server.make_url("/")))
    shown = await page.evaluate(f"() => progressTexts(250, 1, {{rows: 1000, exact: {str(exact).lower()}}}, 'running')")
    assert shown == texts


@in_chromium
async def test_make_link_gives_a_url_that_opens_the_export_with_no_header(page, page_server, token):
    await page.goto(str(page_server.make_url(f"/#token={token}")))
    await page.wait_for_function(TABLES_LISTED, within=RUN_DEADLINE_SECONDS)
    await page.select("#table", url_name(OTHER_SCHEMA, QUOTED_TABLE, qualified=True))
    await page.evaluate("() => { document.querySelector('#limit').value = '25'; }")
    await page.click("#make-link")
    await page.wait_for_function(
        "() => ['made', 'error'].includes(document.querySelector('#link-url').dataset.state)", within=30
    )
    link = await page.evaluate("() => document.querySelector('#link-url').value")
    assert "sig=" in link, link
    async with aiohttp.ClientSession() as session, session.get(link) as response:
        assert response.status == 200
        body = await response.text()
    assert body.splitlines()[0] == 'id,Wert €,"a, b"'
    assert len(body.splitlines()) == 26
    assert page.errors == []
