"""/healthz, and what the service answers while its database is down and once it is back.

The outage tests stop and restart a separate embedded PostgreSQL, never the session's shared one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from streaming_api.settings import Settings
from streaming_api.web.app import create_app
from tests.support.pg import RestartablePostgres, seed_database
from tests.support.scratch import scratch_directory

OUTAGE_ROWS = 10


async def test_healthz_reports_ok_when_the_database_is_up(client):
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok", "database": "ok"}


@pytest.fixture(scope="module")
def separate_postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestartablePostgres]:
    with scratch_directory(tmp_path_factory, "outage") as data_dir:
        server = RestartablePostgres(data_dir)
        server.start()
        # The service writes nothing to a database given by URL: the test seeds it.
        asyncio.run(seed_database(server.url, OUTAGE_ROWS))
        try:
            yield server
        finally:
            if server.running:
                server.stop()


@pytest.fixture
async def outage_client(separate_postgres, aiohttp_client, settings: Settings):
    """A client on an app whose database is the separate server, running when the test starts."""
    if not separate_postgres.running:
        await asyncio.to_thread(separate_postgres.start)
    app = create_app(settings.replace(database_url=separate_postgres.url, rows=OUTAGE_ROWS))
    return await aiohttp_client(app)


async def test_healthz_is_503_while_the_database_is_down_and_ok_once_it_is_back(outage_client, separate_postgres):
    assert (await outage_client.get("/healthz")).status == 200

    await asyncio.to_thread(separate_postgres.stop)
    down = await outage_client.get("/healthz")
    assert down.status == 503
    assert (await down.json())["status"] != "ok"

    await asyncio.to_thread(separate_postgres.start)
    back = await outage_client.get("/healthz")
    assert back.status == 200
    assert await back.json() == {"status": "ok", "database": "ok"}


@pytest.mark.parametrize("endpoint", ["standard", "chunked"])
async def test_data_endpoint_is_a_503_json_while_the_database_is_down(outage_client, separate_postgres, auth, endpoint):
    before = await outage_client.get(f"/{endpoint}", headers=auth)
    assert before.status == 200
    assert (await before.read()).count(b"\n") == OUTAGE_ROWS

    await asyncio.to_thread(separate_postgres.stop)
    down = await outage_client.get(f"/{endpoint}", headers=auth)
    assert down.status == 503
    assert down.headers["Content-Type"].startswith("application/json")
    assert (await down.json())["error"]

    await asyncio.to_thread(separate_postgres.start)
    back = await outage_client.get(f"/{endpoint}", headers=auth)
    assert back.status == 200
    assert (await back.read()).count(b"\n") == OUTAGE_ROWS
