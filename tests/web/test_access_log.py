"""The access log: one line per request, and never a credential from the query string (a token sent as
?token=... is refused, but the line that records the refusal must not hold it)."""

from __future__ import annotations

import logging

import aiohttp
import pytest

from streaming_api import settings as settings_module
from streaming_api.tokens import load_keys, mint_token
from streaming_api.web.middleware.timing import loggable_target, redact_text
from tests.support.pg import ROWS
from tests.support.processes import ServerProcess
from tests.support.waiting import wait_until

ACCESS_LOG = "streaming_api.access"


def _access_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == ACCESS_LOG]


async def test_a_token_in_the_query_string_is_refused_and_never_logged(client, token, caplog):
    with caplog.at_level(logging.DEBUG):
        response = await client.get(f"/chunked?token={token}&limit=5")
    assert response.status == 401
    [line] = _access_lines(caplog)
    assert "/chunked?token=[redacted]&limit=5 client=127.0.0.1 status=401" in line
    assert token not in caplog.text
    assert token.split(".")[2] not in caplog.text


async def test_a_valid_request_with_a_credential_parameter_still_logs_it_redacted(client, auth, caplog):
    with caplog.at_level(logging.DEBUG):
        response = await client.get("/standard?limit=2&api_key=s3cr3t-value", headers=auth)
    assert response.status == 400  # api_key is no parameter of the export
    assert "s3cr3t-value" not in caplog.text
    assert "api_key=[redacted]" in _access_lines(caplog)[0]


@pytest.mark.parametrize(
    ("path", "status"), [("/chunked", 401), ("/nowhere", 404)], ids=["refused token", "unknown path"]
)
async def test_a_json_error_logs_the_bytes_of_its_body(client, path, status, caplog):
    with caplog.at_level(logging.INFO, logger=ACCESS_LOG):
        response = await client.get(path)
        body = await response.read()
    assert response.status == status and body.startswith(b'{"error"')
    [line] = _access_lines(caplog)
    assert f" bytes={len(body)} " in line


async def test_a_refused_parameter_logs_the_bytes_of_its_body(client, auth, caplog):
    with caplog.at_level(logging.INFO, logger=ACCESS_LOG):
        response = await client.get("/standard?limit=x", headers=auth)
        body = await response.read()
    assert response.status == 400
    assert f" bytes={len(body)} " in _access_lines(caplog)[0]


@pytest.mark.parametrize(
    "name",
    [
        "token",
        "access_token",
        "jwt",
        "key",
        "api_key",
        "apikey",
        "API-Key",
        "secret",
        "client_secret",
        "password",
        "passwd",
        "auth",
        "authorization",
        "signature",
        "sig",
        "X-Amz-Signature",
        "session_id",
        "%74oken",
    ],
)
def test_every_credential_looking_parameter_is_redacted(name):
    assert loggable_target("/chunked", f"limit=5&{name}=hunter2&after_id=7") == (
        f"/chunked?limit=5&{name}=[redacted]&after_id=7"
    )


@pytest.mark.parametrize("query", ["limit=5", "after_id=10&format=csv", "page_size=100&limit=1"])
def test_export_parameters_are_logged_as_sent(query):
    assert loggable_target("/chunked", query) == f"/chunked?{query}"


def test_a_jwt_is_redacted_whatever_the_parameter_or_path(token):
    assert token not in loggable_target("/chunked", f"t={token}")
    assert token not in loggable_target(f"/chunked/{token}", "")
    assert token not in loggable_target("/chunked", token)


def test_aiohttps_own_access_log_line_is_redacted_too(token):
    line = f'127.0.0.1 [22/Nov/2026:04:00:00 +0000] "GET /chunked?limit=5&access_token={token} HTTP/1.1" 401 386'
    assert redact_text(line) == (
        '127.0.0.1 [22/Nov/2026:04:00:00 +0000] "GET /chunked?limit=5&access_token=[redacted] HTTP/1.1" 401 386'
    )


async def test_a_real_server_writes_no_query_string_token_to_its_log(tmp_path, database_url, jwt_secret):
    server = ServerProcess.start(tmp_path, {"database_url": database_url, "jwt_secret": jwt_secret, "rows": ROWS})
    try:
        await server.wait_ready(within=120)
        token = mint_token(load_keys(settings_module.build({"jwt_secret": jwt_secret})), ttl=600)
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{server.port}/chunked?token={token}") as response,
        ):
            assert response.status == 401
        await wait_until(lambda: "/chunked?token=" in server.log, 30, "the request's access-log line")
    finally:
        server.stop()
    assert "/chunked?token=[redacted] client=127.0.0.1 status=401" in server.log
    assert token not in server.log and token.split(".")[2] not in server.log
