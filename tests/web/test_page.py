"""The browser page: served without a token, and driven in real headless Chromium (Debian's package) over the
DevTools protocol (tests/support/chromium.py).

The browser tests read their own schema, seeded with PAGE_ROWS rows (PAGE_TEST_ROWS overrides it),
so /standard has real work to do before its first byte. PAGE_SCREENSHOT names where the "Run both"
screenshot goes (default: the test's tmp dir); docs/page.png is one taken with 500,000 rows:

    PAGE_TEST_ROWS=500000 PAGE_SCREENSHOT=docs/page.png .venv/bin/python -m pytest tests/web/test_page.py -k run_both
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from streaming_api.db.schema import seed
from streaming_api.settings import Settings
from streaming_api.web.app import create_app
from tests.support.chromium import CHROMIUM, Page, launch

PAGE_ROWS = int(os.environ.get("PAGE_TEST_ROWS", "50000"))
PAGE_SCHEMA = "page_test"
# Bounded waits in the browser, in seconds: far above what a run takes, so only a hang trips them.
RUN_DEADLINE_SECONDS = 300 if PAGE_ROWS > 100_000 else 60
in_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"needs {CHROMIUM} (apt-get install chromium; .ci/run does)"
)
ALL_PANELS_FINISHED = """() => [...document.querySelectorAll('.panel')]
    .every((panel) => panel.dataset.state === 'done' || panel.dataset.state === 'error')"""


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
    finally:
        await conn.close()


@pytest.fixture
async def page_server(aiohttp_server, settings: Settings, page_database_url: str) -> TestServer:
    # Every pool connection open before the run, so neither endpoint pays for a new one mid-race.
    page_settings = settings.replace(database_url=page_database_url, rows=PAGE_ROWS, pool_min_size=4, pool_max_size=4)
    return await aiohttp_server(create_app(page_settings))


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    async with launch() as browser:
        yield await browser.new_page(width=1360, height=1000)


async def _panels(page: Page) -> dict[str, dict[str, str]]:
    return await page.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('.panel')].map((p) => [p.id, {...p.dataset}]))"
    )


@in_chromium
async def test_run_both_receives_every_row_and_chunked_starts_first(page, page_server, token, tmp_path):
    await page.goto(str(page_server.make_url(f"/#token={token}")))
    await page.click("#run-both")
    await page.wait_for_function(ALL_PANELS_FINISHED, within=RUN_DEADLINE_SECONDS)
    panels = await _panels(page)
    await page.screenshot(Path(os.environ.get("PAGE_SCREENSHOT") or tmp_path / "page.png"))
    assert panels["standard"]["state"] == panels["chunked"]["state"] == "done", panels
    assert int(panels["standard"]["rows"]) == int(panels["chunked"]["rows"]) == PAGE_ROWS
    assert float(panels["chunked"]["ttfbMs"]) < float(panels["standard"]["ttfbMs"])
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
