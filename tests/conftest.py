"""Shared fixtures: one real PostgreSQL per test session (embedded, or TEST_DATABASE_URL), seeded small.

TEST_DATABASE_URL must point at a database the tests may overwrite: they (re)create the points table.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from relay import CuttingRelay, MakeRelay

from streaming_api import config
from streaming_api.app import create_app
from streaming_api.auth import load_keys, mint_token
from streaming_api.config import Settings
from streaming_api.db import seed
from streaming_api.embedded import EmbeddedPostgres

# Not a multiple of the page size, and past several of the every-101st rows that need escaping.
ROWS = 2_345


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL for the whole session, its points table seeded with ROWS rows."""
    url = os.environ.get("TEST_DATABASE_URL")
    embedded = None
    if not url:
        embedded = EmbeddedPostgres(tmp_path_factory.mktemp("db"))
        url = embedded.start()
    asyncio.run(seed_database(url, ROWS))
    try:
        yield url
    finally:
        if embedded is not None:
            embedded.stop()


async def seed_database(url: str, rows: int) -> None:
    """Make the points table of the database at url hold exactly rows 1..rows."""
    conn = await asyncpg.connect(url)
    try:
        await seed(conn, rows)
    finally:
        await conn.close()


def b64url(data: bytes) -> str:
    """Base64url without padding, as in a JWT."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_segment(obj: dict) -> str:
    """A JWT header or payload segment, for tokens crafted by hand."""
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


@pytest.fixture(scope="session")
def table_rows(database_url: str) -> list[dict]:
    """Every row of the points table as asyncpg reads it directly, in id order: what bodies must equal."""
    return asyncio.run(_fetch_rows(database_url))


async def _fetch_rows(url: str) -> list[dict]:
    conn = await asyncpg.connect(url)
    try:
        return [dict(record) for record in await conn.fetch("SELECT * FROM points ORDER BY id")]
    finally:
        await conn.close()


class RestartablePostgres:
    """An embedded server the tests may stop and start again; always at the same URL (a socket in its data dir)."""

    def __init__(self, data_path: Path) -> None:
        self._server = EmbeddedPostgres(data_path)
        self.running = False
        self.url = ""

    def start(self) -> None:
        self.url = self._server.start()
        self.running = True

    def stop(self) -> None:
        self._server.stop()
        self.running = False


@pytest.fixture(scope="session")
def jwt_secret() -> str:
    return secrets.token_hex(32)


@pytest.fixture
def settings(database_url: str, jwt_secret: str, tmp_path: Path) -> Settings:
    return config.build(
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
