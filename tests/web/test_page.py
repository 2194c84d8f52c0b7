"""The browser page: served without a token, and driven in real headless Chromium (Debian's package).

The browser tests read their own schema, seeded with PAGE_ROWS rows (PAGE_TEST_ROWS overrides it),
so /standard has real work to do before its first byte. PAGE_SCREENSHOT names where the "Run both"
screenshot goes (default: the test's tmp dir); docs/page.png is one taken with 500,000 rows:

    PAGE_TEST_ROWS=500000 PAGE_SCREENSHOT=docs/page.png .venv/bin/python -m pytest tests/test_page.py -k run_both
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from streaming_api.db.schema import seed
from streaming_api.settings import Settings
from streaming_api.web.app import create_app

CHROMIUM = Path("/usr/bin/chromium")
# Root in a container: no sandbox; no GPU; nothing that reaches beyond 127.0.0.1.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PAGE_ROWS = int(os.environ.get("PAGE_TEST_ROWS", "50000"))
PAGE_SCHEMA = "page_test"
# Bounded waits in the browser, in milliseconds: far above what a run takes, so only a hang trips them.
RUN_DEADLINE_MS = 300_000 if PAGE_ROWS > 100_000 else 60_000
in_chromium = pytest.mark.skipif(
    not CHROMIUM.exists() or importlib.util.find_spec("playwright") is None,
    reason=f"needs {CHROMIUM} (apt-get install chromium; .ci/run does) and the playwright package",
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
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
def page_errors() -> list[str]:
    """Uncaught exceptions and console errors of the page (a CSP violation is one)."""
    return []


@pytest.fixture
async def page(browser, page_errors: list[str]) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": 1360, "height": 1000})
    page = await context.new_page()
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and page_errors.append(message.text))
    yield page
    await context.close()


async def _panels(page) -> dict[str, dict[str, str]]:
    return await page.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('.panel')].map((p) => [p.id, {...p.dataset}]))"
    )


@in_chromium
async def test_run_both_receives_every_row_and_chunked_starts_first(page, page_errors, page_server, token, tmp_path):
    await page.goto(str(page_server.make_url(f"/#token={token}")))
    await page.click("#run-both")
    await page.wait_for_function(ALL_PANELS_FINISHED, timeout=RUN_DEADLINE_MS)
    panels = await _panels(page)
    screenshot = Path(os.environ.get("PAGE_SCREENSHOT") or tmp_path / "page.png")
    await page.screenshot(path=str(screenshot), full_page=True)
    assert panels["standard"]["state"] == panels["chunked"]["state"] == "done", panels
    assert int(panels["standard"]["rows"]) == int(panels["chunked"]["rows"]) == PAGE_ROWS
    assert float(panels["chunked"]["ttfbMs"]) < float(panels["standard"]["ttfbMs"])
    assert page_errors == []


@in_chromium
async def test_page_says_how_to_get_a_token_on_401(page, page_server):
    await page.goto(str(page_server.make_url("/#token=not.a.token")))
    await page.click("#run-both")
    await page.wait_for_function(ALL_PANELS_FINISHED, timeout=RUN_DEADLINE_MS)
    message = await page.inner_text("#message")
    assert "refused the token" in message
    assert "python run.py token" in message


@in_chromium
async def test_page_moves_the_token_from_the_address_bar_to_session_storage(page, page_server, token):
    await page.goto(str(page_server.make_url(f"/#token={token}")))
    assert "token" not in page.url
    assert await page.evaluate("() => sessionStorage.getItem('streaming_api.token')") == token
