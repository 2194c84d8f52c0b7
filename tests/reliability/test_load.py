"""Load: 64 concurrent clients against a real `run.py serve` process, every body verified.

Marked `load` (it takes tens of seconds); it is part of the normal `python -m pytest` run.
Loopback only, bounded counts: LOAD_CLIENTS clients, each sending REQUESTS_PER_CLIENT requests.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from dataclasses import dataclass, field

import aiohttp
import pytest

from streaming_api import settings as settings_module
from streaming_api.tokens import load_keys, mint_token
from tests.support.bodies import FORMATS, assert_rows
from tests.support.pg import BIG_ROWS
from tests.support.processes import ServerProcess

LOAD_CLIENTS = 64
REQUESTS_PER_CLIENT = 8
# The server process's peak RSS must stay under this over the whole run (measured about 200 MB on the
# 2-core development machine; /standard's two slots of up to 14 MB bodies dominate it).
LOAD_RSS_BOUND_MB = 400
SEED = 20260105


@dataclass(frozen=True)
class Planned:
    endpoint: str
    format: str = "ndjson"
    after_id: int = 0
    limit: int | None = None

    @property
    def path(self) -> str:
        if self.endpoint == "healthz":
            return "/healthz"
        query = f"format={self.format}&after_id={self.after_id}"
        return f"/{self.endpoint}?{query}" + ("" if self.limit is None else f"&limit={self.limit}")

    @property
    def rows(self) -> int:
        available = BIG_ROWS - self.after_id
        return available if self.limit is None else min(self.limit, available)


def plan(rng: random.Random) -> Planned:
    kind = rng.random()
    if kind < 0.2:
        return Planned("healthz")
    endpoint = "standard" if kind < 0.45 else "chunked"
    after_id = rng.randint(0, BIG_ROWS)
    # Half the exports run to the end of the table (up to 100,000 rows), half take a slice.
    limit = None if rng.random() < 0.5 else rng.randint(0, 20_000)
    return Planned(endpoint, rng.choice(FORMATS), after_id, limit)


@dataclass
class Figures:
    requests: dict[str, int] = field(default_factory=dict)
    rows: int = 0
    bytes: int = 0
    standard_busy: int = 0
    errors: list[str] = field(default_factory=list)
    first_byte_seconds: dict[str, list[float]] = field(default_factory=dict)

    def p95_ms(self, endpoint: str) -> float:
        samples = sorted(self.first_byte_seconds.get(endpoint, []))
        return samples[min(len(samples) - 1, int(len(samples) * 0.95))] * 1000 if samples else float("nan")


async def _one(session: aiohttp.ClientSession, base: str, headers: dict[str, str], p: Planned, figures: Figures):
    figures.requests[p.endpoint] = figures.requests.get(p.endpoint, 0) + 1
    started = time.perf_counter()
    try:
        async with session.get(base + p.path, headers=headers) as response:
            first = await response.content.readany()
            first_byte = time.perf_counter() - started
            parts = [first]
            async for data in response.content.iter_any():
                parts.append(data)
            body = b"".join(parts)
            if p.endpoint == "standard" and response.status == 503:
                # The intended refusal: both of /standard's slots were taken.
                assert b'"standard_busy"' in body, body[:200]
                figures.standard_busy += 1
                return
            assert response.status == 200, (response.status, body[:200])
            figures.first_byte_seconds.setdefault(p.endpoint, []).append(first_byte)
            figures.bytes += len(body)
            if p.endpoint != "healthz":
                assert_rows(p.format, body, p.after_id, p.rows)
                figures.rows += p.rows
    except (AssertionError, aiohttp.ClientError, TimeoutError) as exc:
        figures.errors.append(f"{p.path}: {type(exc).__name__}: {str(exc)[:200]}")


_ACCESS_LINE = re.compile(r"status=200 endpoint=(\w+) .* first_byte_ms=([0-9.]+)")


def _server_first_byte_p95_ms(log: str) -> dict[str, float]:
    """p95 of the server's own first_byte_ms (request received to first body byte handed to the socket)."""
    samples: dict[str, list[float]] = {"chunked": [], "standard": []}
    for endpoint, ms in _ACCESS_LINE.findall(log):
        samples.setdefault(endpoint, []).append(float(ms))
    return {
        endpoint: sorted(values)[min(len(values) - 1, int(len(values) * 0.95))] if values else float("nan")
        for endpoint, values in samples.items()
    }


@pytest.mark.load
async def test_sixty_four_clients_mixing_every_endpoint_and_format_get_only_verified_bodies(
    big_url, jwt_secret, tmp_path, capsys
):
    server = ServerProcess.start(
        tmp_path,
        {
            "database_url": big_url,
            "jwt_secret": jwt_secret,
            "data_dir": str(tmp_path / "data"),
            "rows": BIG_ROWS,
            # INFO: one access-log line per request, with the server's own time to first byte.
            "log_level": "INFO",
        },
    )
    try:
        await server.wait_ready(within=60)
        idle_rss = server.rss_mb()
        token = mint_token(
            load_keys(settings_module.build({"jwt_secret": jwt_secret, "data_dir": str(tmp_path)})), ttl=600
        )
        headers = {"Authorization": f"JWT {token}"}
        base = f"http://127.0.0.1:{server.port}"
        rng = random.Random(SEED)
        plans = [[plan(rng) for _ in range(REQUESTS_PER_CLIENT)] for _ in range(LOAD_CLIENTS)]
        figures = Figures()

        async def client(requests: list[Planned]) -> None:
            for p in requests:
                await _one(session, base, headers, p, figures)

        connector = aiohttp.TCPConnector(limit=LOAD_CLIENTS)
        started = time.perf_counter()
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:
            await asyncio.gather(*(client(requests) for requests in plans))
        elapsed = time.perf_counter() - started
        peak_rss = server.peak_rss_mb()
    finally:
        server.stop()

    total = sum(figures.requests.values())
    server_first_byte = _server_first_byte_p95_ms(server.log)
    with capsys.disabled():
        print(
            f"\nload: {LOAD_CLIENTS} clients, {total} requests "
            f"({', '.join(f'{k} {v}' for k, v in sorted(figures.requests.items()))}) in {elapsed:.1f} s; "
            f"{figures.rows:,} rows, {figures.bytes / 1e6:,.0f} MB verified; "
            f"errors {len(figures.errors)}, /standard 503 (busy, intended) {figures.standard_busy}; "
            f"server RSS idle {idle_rss:.0f} MB, peak {peak_rss:.0f} MB (bound {LOAD_RSS_BOUND_MB}); "
            f"p95 time to first byte, client side: chunked {figures.p95_ms('chunked'):.0f} ms, "
            f"standard {figures.p95_ms('standard'):.0f} ms, healthz {figures.p95_ms('healthz'):.0f} ms; "
            f"server side: chunked {server_first_byte['chunked']:.1f} ms, "
            f"standard {server_first_byte['standard']:.1f} ms"
        )
    assert figures.errors == []
    assert total == LOAD_CLIENTS * REQUESTS_PER_CLIENT
    assert peak_rss < LOAD_RSS_BOUND_MB
    assert server.process.returncode == 0, server.log
