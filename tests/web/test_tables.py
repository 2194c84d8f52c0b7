"""Serving the user's own tables: the `tables` setting and its patterns, names in URLs (schema-qualified,
mixed case, quotes, dots, non-ASCII), 404s that say nothing of what exists, GET /tables, GET
/openapi.json, and the catalog read again while the server runs."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from urllib.parse import quote

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from openapi_spec_validator import validate

from streaming_api.db import served
from streaming_api.web.app import create_app
from tests.support.pg import ROWS

SCHEMA = "Sales ✓"
# A table named with a quote in it, as SQL writes the name.
SAY_HI = '"say ""hi"""'


@pytest.fixture(scope="module")
def shop_url(database_url: str) -> str:
    """Tables of the shapes users have, in the session's database: a schema that needs quoting, an
    `orders` table, a mixed-case name, a name with a dot and one with a quote, a secret table no pattern names."""

    async def make() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                f"""
                DROP SCHEMA IF EXISTS "{SCHEMA}" CASCADE; CREATE SCHEMA "{SCHEMA}";
                CREATE TABLE "{SCHEMA}".orders (id uuid PRIMARY KEY, amount numeric(10,2) NOT NULL, note text);
                INSERT INTO "{SCHEMA}".orders
                    SELECT md5(g::text)::uuid, g / 4.0, 'n' || g FROM generate_series(1, 40) g;
                CREATE TABLE "{SCHEMA}"."MixedCase" (id int PRIMARY KEY);
                INSERT INTO "{SCHEMA}"."MixedCase" SELECT generate_series(1, 3);
                CREATE TABLE "{SCHEMA}"."dotted.name" (id int PRIMARY KEY);
                INSERT INTO "{SCHEMA}"."dotted.name" VALUES (1);
                CREATE TABLE "{SCHEMA}".{SAY_HI} (id int PRIMARY KEY);
                INSERT INTO "{SCHEMA}".{SAY_HI} VALUES (7);
                CREATE TABLE "{SCHEMA}".secret (id int PRIMARY KEY);
                CREATE VIEW "{SCHEMA}".big_orders AS SELECT * FROM "{SCHEMA}".orders WHERE amount > 5;
                """
            )
        finally:
            await conn.close()

    asyncio.run(make())
    return database_url


PATTERNS = (
    "points",
    f'"{SCHEMA}".orders',
    f'"{SCHEMA}".big_*',
    f'"{SCHEMA}"."MixedCase"',
    f'"{SCHEMA}".?otted*',
    f'"{SCHEMA}".say*',
)


@pytest.fixture
async def shop(aiohttp_client, settings, shop_url) -> TestClient:
    return await aiohttp_client(create_app(settings.replace(tables=PATTERNS)))


def _path(endpoint: str, name: str) -> str:
    return f"/{endpoint}/{quote(name, safe='')}"


@pytest.mark.parametrize(
    ("name", "rows"),
    [
        (f"{SCHEMA}.orders", 40),
        (f"{SCHEMA}.MixedCase", 3),
        (f'{SCHEMA}."dotted.name"', 1),
        (f'{SCHEMA}.say "hi"', 1),
        (f"{SCHEMA}.big_orders", 20),
        ("points", ROWS),
        ("public.points", ROWS),
    ],
)
@pytest.mark.parametrize("endpoint", ["chunked", "standard"])
async def test_any_served_name_exports_on_both_endpoints(shop, auth, endpoint, name, rows):
    response = await shop.get(_path(endpoint, name) + ".csv", headers=auth)
    assert response.status == 200, await response.text()
    assert len(list(csv.reader(io.StringIO(await response.text(), newline="")))) == rows + 1


async def test_the_bare_endpoints_serve_the_first_table_named(shop, auth):
    response = await shop.get("/chunked?limit=2", headers=auth)
    assert response.status == 200 and response.headers["Content-Disposition"] == 'attachment; filename="points.ndjson"'


async def test_a_name_not_served_is_the_same_404_whether_it_exists_or_not(shop, auth):
    exists = await shop.get(_path("chunked", f"{SCHEMA}.secret"), headers=auth)
    missing = await shop.get(_path("chunked", f"{SCHEMA}.nothing"), headers=auth)
    assert exists.status == missing.status == 404
    exists_body, missing_body = await exists.json(), await missing.json()
    assert exists_body["error"] == missing_body["error"] == "table_not_found"
    assert exists_body["detail"].replace("secret", "X") == missing_body["detail"].replace("nothing", "X")
    # Case is exact, as in quoted SQL: mixedcase is not MixedCase.
    assert (await shop.get(_path("chunked", f"{SCHEMA}.mixedcase"), headers=auth)).status == 404


async def test_a_non_ascii_table_name_names_its_download(shop, auth):
    response = await shop.get(_path("chunked", f'{SCHEMA}.say "hi"') + ".csv", headers=auth)
    assert response.headers["Content-Disposition"] == 'attachment; filename="say__hi_.csv"'
    response = await shop.get(_path("chunked", f"{SCHEMA}.orders"), headers=auth)
    assert json.loads(response.headers["X-Key"]) == ["id"]


async def test_tables_lists_columns_types_key_estimate_and_urls(shop, auth):
    response = await shop.get("/tables", headers=auth)
    assert response.status == 200
    listed = {table["name"]: table for table in (await response.json())["tables"]}
    assert set(listed) == {
        "points", f"{SCHEMA}.orders", f"{SCHEMA}.big_orders", f"{SCHEMA}.MixedCase", f'{SCHEMA}."dotted.name"',
        f'{SCHEMA}.say "hi"',
    }  # fmt: skip
    orders = listed[f"{SCHEMA}.orders"]
    assert [(c["name"], c["type"], c["nullable"]) for c in orders["columns"]] == [
        ("id", "uuid", False),
        ("amount", "numeric(10,2)", False),
        ("note", "text", True),
    ]
    assert orders["key"] == ["id"] and orders["kind"] == "table" and orders["rows_estimate"] > 0
    assert orders["urls"]["chunked"] == "/chunked/Sales%20%E2%9C%93.orders"
    assert listed[f"{SCHEMA}.big_orders"]["key"] == [] and not listed[f"{SCHEMA}.big_orders"]["resumable"]
    for table in listed.values():  # every URL it gives works
        assert (await shop.get(table["formats"]["csv"], headers=auth)).status == 200


async def test_tables_and_openapi_need_a_token(shop):
    assert (await shop.get("/tables")).status == 401
    assert (await shop.get("/openapi.json")).status == 401


async def test_openapi_is_a_valid_3_1_document_of_every_route_and_table(shop, auth):
    response = await shop.get("/openapi.json", headers=auth)
    document = await response.json()
    validate(document)  # raises on anything that is not valid OpenAPI 3.1
    assert document["openapi"] == "3.1.0"
    assert "/chunked/Sales%20%E2%9C%93.orders" in document["paths"] and "/tables" in document["paths"]
    row = document["components"]["schemas"]
    orders = next(schema for schema in row.values() if schema.get("title") == f"{SCHEMA}.orders")
    assert orders["properties"]["id"]["format"] == "uuid"
    assert orders["properties"]["note"]["anyOf"][1] == {"type": "null"}


# --- the catalog, read again ----------------------------------------------------------------------


@pytest.fixture
async def scratch(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(database_url)
    await conn.execute(
        "DROP SCHEMA IF EXISTS changing CASCADE; CREATE SCHEMA changing;"
        " CREATE TABLE changing.items (id int PRIMARY KEY, name text); INSERT INTO changing.items VALUES (1, 'one')"
    )
    try:
        yield conn
    finally:
        await conn.execute("DROP SCHEMA changing CASCADE")
        await conn.close()


async def test_a_column_added_while_the_server_runs_is_exported_after_a_refresh(
    aiohttp_client, settings, auth, scratch
):
    client = await aiohttp_client(create_app(settings.replace(tables=("changing.*",), catalog_refresh=0.2)))
    first = await client.get("/chunked/changing.items", headers=auth)
    assert list(json.loads((await first.text()).splitlines()[0])) == ["id", "name"]
    await scratch.execute("ALTER TABLE changing.items ADD COLUMN added date DEFAULT '2026-01-01'")
    await scratch.execute("CREATE TABLE changing.fresh (id int PRIMARY KEY); INSERT INTO changing.fresh VALUES (5)")

    async def refreshed() -> bool:
        response = await client.get("/chunked/changing.items", headers=auth)
        return "added" in json.loads((await response.text()).splitlines()[0])

    for _ in range(100):
        if await refreshed():
            break
        await asyncio.sleep(0.05)
    assert await refreshed()
    assert (await client.get("/chunked/changing.fresh", headers=auth)).status == 200


async def test_a_table_dropped_under_a_request_is_a_503_to_retry_then_a_404(aiohttp_client, settings, auth, scratch):
    client = await aiohttp_client(create_app(settings.replace(tables=("changing.*",), catalog_refresh=0)))
    before = await client.get("/chunked/changing.items", headers=auth)
    assert before.status == 200 and await before.read()
    await scratch.execute("DROP TABLE changing.items")
    changed = await client.get("/chunked/changing.items", headers=auth)
    assert changed.status == 503 and (await changed.json())["error"] == "table_changed"
    for _ in range(100):  # the refresh the failure started
        if (await client.get("/chunked/changing.items", headers=auth)).status == 404:
            break
        await asyncio.sleep(0.05)
    assert (await client.get("/chunked/changing.items", headers=auth)).status == 404


async def test_a_pattern_matching_nothing_warns_and_an_exact_name_missing_stops(settings, scratch, caplog):
    async def load(*patterns: str) -> served.Catalog:
        catalog = served.Catalog(settings.replace(tables=patterns).table_patterns)
        await catalog.load(scratch)
        return catalog

    catalog = await load("changing.items", "nowhere.*")
    assert [t.name for t in catalog.tables] == ["items"]
    assert "nowhere.* matches nothing" in caplog.text
    with pytest.raises(served.CatalogError, match=r"changing\.missing: no such table or view"):
        await load("changing.items", "changing.missing")


async def test_a_points_table_of_another_shape_is_served_as_it_is(aiohttp_client, settings, auth, scratch):
    """A user's own `points` is just a table to serve: its own columns, not the demo's (and no 500)."""
    await scratch.execute(
        "CREATE TABLE changing.points (code text PRIMARY KEY, x int); INSERT INTO changing.points VALUES ('a', 1)"
    )
    client = await aiohttp_client(create_app(settings.replace(tables=("changing.points",))))
    for method in ("HEAD", "GET"):
        response = await client.request(method, "/chunked", headers=auth)
        assert response.status == 200
    assert await response.text() == '{"code":"a","x":1}\n'
