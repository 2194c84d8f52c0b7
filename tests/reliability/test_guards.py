"""Guards: /standard's concurrency slots and row cap keep memory bounded; security headers, CORS, binding."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from streaming_api import settings as settings_module
from streaming_api.settings import Settings
from streaming_api.tokens import load_keys, mint_token
from tests.support.bodies import assert_rows
from tests.support.pg import BIG_ROWS, ROWS, points_locked, service_backends_waiting_on_lock
from tests.support.processes import ServerProcess
from tests.support.running import running

# --- 6. /standard cannot exhaust memory -----------------------------------------------------------------


async def test_standard_beyond_max_concurrency_gets_a_503_at_once(settings, database_url, auth):
    async with running(settings.replace(standard_max_concurrency=2, shutdown_timeout=1)) as server:
        session = server.session
        async with points_locked(database_url):
            # Two buffered responses in the making, both stuck on the locked table, hold both slots.
            building = [asyncio.create_task(session.get(f"{server.url}/standard", headers=auth)) for _ in range(2)]
            await service_backends_waiting_on_lock(database_url, count=2, within=10)

            refused = await session.get(f"{server.url}/standard", headers=auth)
            assert refused.status == 503
            assert int(refused.headers["Retry-After"]) > 0
            body = await refused.json()
            assert body["error"] == "standard_busy"
            assert "/chunked" in body["detail"]
            assert not any(task.done() for task in building), "the refusal did not wait for a slot"

        for response in await asyncio.gather(*building):
            assert response.status == 200
            assert_rows("ndjson", await response.read(), 0, ROWS)
        # The slots are free again.
        assert (await session.get(f"{server.url}/standard?limit=1", headers=auth)).status == 200


@pytest.mark.parametrize(
    ("query", "chunked"),
    [
        ("", "/chunked"),
        ("?format=csv", "/chunked?format=csv"),
        (f"?after_id={ROWS - 1001}", f"/chunked?after_id={ROWS - 1001}"),
    ],
)
async def test_standard_over_max_rows_is_a_413_pointing_to_chunked(settings, auth, query, chunked):
    async with running(settings.replace(standard_max_rows=1000, shutdown_timeout=1)) as server:
        session = server.session
        response = await session.get(f"{server.url}/standard{query}", headers=auth)
        assert response.status == 413
        body = await response.json()
        assert body["error"] == "too_many_rows"
        assert body["chunked"] == chunked
        assert chunked in body["detail"]
        assert body["max_rows"] == 1000
        streamed = await session.get(f"{server.url}{chunked}", headers=auth)
        assert streamed.status == 200


@pytest.mark.parametrize("query", ["?limit=1000", f"?after_id={ROWS - 1000}", f"?after_id={ROWS - 1001}&limit=1000"])
async def test_standard_at_max_rows_is_served(settings, auth, query):
    async with running(settings.replace(standard_max_rows=1000, shutdown_timeout=1)) as server:
        session = server.session
        response = await session.get(f"{server.url}/standard{query}", headers=auth)
        assert response.status == 200
        assert (await response.read()).count(b"\n") == 1000


async def _standard_burst(session: aiohttp.ClientSession, url: str, headers: dict[str, str], clients: int) -> list[int]:
    async def one() -> int:
        async with session.get(url, headers=headers) as response:
            body = await response.read()
            if response.status == 200:
                assert_rows("ndjson", body, 0, BIG_ROWS)
            return response.status

    return await asyncio.gather(*(one() for _ in range(clients)))


async def test_sixteen_concurrent_standard_requests_use_no_more_memory_than_two(big_url, jwt_secret, tmp_path):
    server = ServerProcess.start(
        tmp_path,
        {
            "database_url": big_url,
            "jwt_secret": jwt_secret,
            "data_dir": str(tmp_path / "data"),
            "rows": BIG_ROWS,
            "standard_max_concurrency": 2,
            "log_level": "WARNING",
        },
    )
    try:
        await server.wait_ready(within=60)
        token = mint_token(
            load_keys(settings_module.build({"jwt_secret": jwt_secret, "data_dir": str(tmp_path)})), ttl=600
        )
        headers = {"Authorization": f"JWT {token}"}
        url = f"http://127.0.0.1:{server.port}/standard"
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120)) as session:
            await _standard_burst(session, url, headers, 2)  # warm-up: allocator arenas, statement caches

            server.reset_peak_rss()
            idle = server.rss_mb()
            assert await _standard_burst(session, url, headers, 2) == [200, 200]
            two = server.peak_rss_mb() - idle

            server.reset_peak_rss()
            idle = server.rss_mb()
            statuses = await _standard_burst(session, url, headers, 16)
            sixteen = server.peak_rss_mb() - idle
        assert set(statuses) <= {200, 503}
        assert statuses.count(503) >= 8, statuses
        # Each buffered body of 100,000 rows costs tens of MB; 16 built at once would cost 8 times two.
        assert sixteen <= two * 1.3 + 16, f"peak growth: 2 requests {two:.0f} MB, 16 requests {sixteen:.0f} MB"
    finally:
        server.stop()
    assert server.process.returncode == 0, server.log


# --- 11. security headers, CORS, binding ----------------------------------------------------------------


async def test_every_response_says_nosniff(settings, database_url, auth):
    async with running(settings.replace(standard_max_rows=1000, statement_timeout=0.2, shutdown_timeout=1)) as server:
        session = server.session
        answers = {}
        for method, path, headers in [
            ("GET", "/healthz", {}),
            ("GET", "/chunked?limit=1", auth),
            ("GET", "/standard?limit=1", auth),
            ("GET", "/chunked?limit=x", auth),  # 400
            ("GET", "/chunked", {}),  # 401
            ("GET", "/nowhere", {}),  # 404
            ("POST", "/chunked", auth),  # 405
            ("GET", "/chunked", {**auth, "Accept": "image/png"}),  # 406
            ("GET", "/standard", auth),  # 413
        ]:
            async with session.request(method, server.url + path, headers=headers) as response:
                answers[(method, path, response.status)] = response.headers.get("X-Content-Type-Options")
        async with points_locked(database_url), session.get(f"{server.url}/chunked", headers=auth) as response:
            answers[("GET", "/chunked", response.status)] = response.headers.get("X-Content-Type-Options")  # 503
    assert {status for _, _, status in answers} == {200, 400, 401, 404, 405, 406, 413, 503}
    assert set(answers.values()) == {"nosniff"}, answers


@pytest.mark.parametrize("path", ["/chunked?limit=1", "/healthz"])
async def test_no_cors_headers_unless_configured(settings, auth, path):
    async with running(settings.replace(shutdown_timeout=1)) as server, aiohttp.ClientSession() as session:
        origin = {"Origin": "https://elsewhere.example"}
        async with session.get(server.url + path, headers={**auth, **origin}) as response:
            assert response.status == 200
            assert not [name for name in response.headers if name.lower().startswith("access-control-")]
        preflight = {
            **origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        }
        async with session.options(server.url + path, headers=preflight) as response:
            assert response.status == 405
            assert not [name for name in response.headers if name.lower().startswith("access-control-")]


async def test_cors_allows_only_the_configured_origins(settings, auth):
    allowed = "https://app.example"
    async with running(settings.replace(cors_origins=(allowed,), shutdown_timeout=1)) as server:
        session = server.session
        async with session.get(f"{server.url}/chunked?limit=1", headers={**auth, "Origin": allowed}) as response:
            assert response.status == 200
            assert response.headers["Access-Control-Allow-Origin"] == allowed
            assert "Origin" in response.headers.getall("Vary")
        other = {**auth, "Origin": "https://elsewhere.example"}
        async with session.get(f"{server.url}/chunked?limit=1", headers=other) as response:
            assert "Access-Control-Allow-Origin" not in response.headers

        preflight = {"Origin": allowed, "Access-Control-Request-Method": "GET"}
        async with session.options(f"{server.url}/chunked", headers=preflight) as response:
            assert response.status == 204
            assert response.headers["Access-Control-Allow-Origin"] == allowed
            assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
        preflight["Origin"] = "https://elsewhere.example"
        async with session.options(f"{server.url}/chunked", headers=preflight) as response:
            assert response.status == 405


def test_default_bind_address_is_loopback(tmp_path):
    assert Settings().host == "127.0.0.1"
    assert settings_module.load(settings_file=tmp_path / "absent.py", environ={}).host == "127.0.0.1"
