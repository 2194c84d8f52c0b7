"""/metrics: Prometheus figures per endpoint, format and status, fed by the request timing; off or behind the JWT."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streaming_api.export.formats import FORMATS
from streaming_api.web.app import create_app
from tests.support.pg import ROWS

FORMAT_NAMES = sorted(FORMATS)


async def _scrape(client, headers: dict[str, str] | None = None) -> dict[tuple[str, frozenset], float]:
    response = await client.get("/metrics", headers=headers or {})
    assert response.status == 200
    samples = {}
    for family in text_string_to_metric_families(await response.text()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def _value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


async def test_metrics_count_requests_by_endpoint_format_and_status(client, auth):
    await client.get("/chunked?format=csv&limit=10", headers=auth)
    await client.get("/chunked?format=csv&limit=10", headers=auth)
    await client.get("/standard?limit=5", headers=auth)
    await client.get("/chunked?format=nope", headers=auth)
    samples = await _scrape(client)
    total = "streaming_api_requests_total"
    assert _value(samples, total, endpoint="chunked", format="csv", status="200", outcome="complete") == 2
    assert _value(samples, total, endpoint="standard", format="ndjson", status="200", outcome="complete") == 1
    assert _value(samples, total, endpoint="chunked", format="", status="400", outcome="complete") == 1


async def test_metrics_count_rows_and_bytes_sent(client, auth):
    response = await client.get("/chunked?format=json&limit=17", headers={**auth, "Accept-Encoding": "identity"})
    body = await response.read()
    samples = await _scrape(client)
    assert _value(samples, "streaming_api_rows_sent_total", endpoint="chunked", format="json") == 17
    assert _value(samples, "streaming_api_bytes_sent_total", endpoint="chunked", format="json") == len(body)


@pytest.mark.parametrize("endpoint", ["standard", "chunked"])
@pytest.mark.parametrize("fmt", FORMAT_NAMES)
async def test_metrics_count_the_rows_sent_in_every_format(client, auth, endpoint, fmt):
    """Rows, not pages: Arrow's pages reach the server folded into one row each."""
    pages = "&page_size=300" if endpoint == "chunked" else ""
    response = await client.get(f"/{endpoint}?format={fmt}&after_id=100{pages}", headers=auth)
    await response.read()
    samples = await _scrape(client)
    assert _value(samples, "streaming_api_rows_sent_total", endpoint=endpoint, format=fmt) == ROWS - 100


async def test_metrics_count_the_bytes_on_the_wire_when_compressed(client, auth):
    response = await client.get("/chunked?limit=500", headers={**auth, "Accept-Encoding": "zstd"})
    decoded = await response.read()
    samples = await _scrape(client)
    sent = _value(samples, "streaming_api_bytes_sent_total", endpoint="chunked", format="ndjson")
    assert response.headers["Content-Encoding"] == "zstd"
    assert 0 < sent < len(decoded) / 3


async def test_metrics_observe_first_byte_and_total_time(client, auth):
    response = await client.get("/standard?format=csv&limit=3", headers=auth)
    await response.read()
    samples = await _scrape(client)
    labels = {"endpoint": "standard", "format": "csv"}
    assert _value(samples, "streaming_api_first_byte_seconds_count", **labels) == 1
    assert _value(samples, "streaming_api_request_duration_seconds_count", **labels) == 1
    first_byte = _value(samples, "streaming_api_first_byte_seconds_sum", **labels)
    total = _value(samples, "streaming_api_request_duration_seconds_sum", **labels)
    assert 0 < first_byte <= total


async def test_metrics_count_an_open_stream_as_in_flight(client, auth):
    # One page per row keeps the stream going (one query per row) well after its first bytes arrive.
    response = await client.get("/chunked?page_size=1", headers=auth)
    assert await response.content.readany()
    during = await _scrape(client)
    await response.read()
    after = await _scrape(client)
    assert _value(during, "streaming_api_streams_in_flight", endpoint="chunked") == 1
    assert _value(after, "streaming_api_streams_in_flight", endpoint="chunked") == 0


async def test_metrics_report_process_memory(client):
    samples = await _scrape(client)
    assert _value(samples, "process_resident_memory_bytes") > 0


async def test_metrics_need_no_token_by_default(client):
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")


async def test_metrics_can_be_turned_off(aiohttp_client, settings, auth):
    client = await aiohttp_client(create_app(settings.replace(metrics_enabled=False)))
    response = await client.get("/metrics", headers=auth)
    assert response.status == 404
    assert (await response.json())["error"] == "not_found"


async def test_metrics_can_require_the_token(aiohttp_client, settings, auth):
    client = await aiohttp_client(create_app(settings.replace(metrics_require_token=True)))
    refused = await client.get("/metrics")
    allowed = await client.get("/metrics", headers=auth)
    assert refused.status == 401
    assert (await refused.json())["error"] == "unauthorized"
    assert allowed.status == 200


async def test_apps_in_one_process_keep_separate_figures(aiohttp_client, settings, auth):
    first = await aiohttp_client(create_app(settings))
    second = await aiohttp_client(create_app(settings))
    await first.get("/standard?limit=4", headers=auth)
    samples = await _scrape(second)
    assert _value(samples, "streaming_api_rows_sent_total", endpoint="standard", format="ndjson") is None
