"""Abuse: hostile tokens and headers get 401 or 4xx and leave nothing of themselves in the logs; random
parameters and Accept headers never get a 500; SQL in a parameter changes nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

import asyncpg
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import HealthCheck, event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from streaming_api.settings import Settings
from streaming_api.web import logfilters
from streaming_api.web.app import create_app
from tests.support.bodies import assert_rows
from tests.support.pg import ROWS
from tests.support.raw_http import raw_exchange
from tests.support.running import running
from tests.support.tokens import b64url, jwt_segment

AUDIENCE = "exports"
ISSUER = "https://issuer.test"


def _claims(**changes: object) -> dict:
    now = int(time.time())
    claims = {"sub": "abuse", "iat": now, "exp": now + 600, "aud": AUDIENCE, "iss": ISSUER}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _hs256_by_hand(header: dict, claims: dict, key: bytes) -> str:
    """HS256 signed without PyJWT, which refuses a PEM public key as an HMAC secret."""
    signing_input = f"{jwt_segment(header)}.{jwt_segment(claims)}"
    return f"{signing_input}.{b64url(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())}"


@pytest.fixture(autouse=True)
def _log_filters_of_run_py_serve() -> None:
    logfilters.install()


@pytest.fixture
def claims_settings(settings: Settings) -> Settings:
    return settings.replace(jwt_audience=AUDIENCE, jwt_issuer=ISSUER, shutdown_timeout=1)


@pytest.fixture
def public_pem() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@pytest.fixture
def rsa_settings(claims_settings: Settings, public_pem: bytes, tmp_path: Path) -> Settings:
    public_file = tmp_path / "public.pem"
    public_file.write_bytes(public_pem)
    return claims_settings.replace(jwt_secret=None, jwt_algorithms=("RS256",), jwt_public_key_file=str(public_file))


# --- 9. JWT -------------------------------------------------------------------------------------------

# Each case: the Authorization header value (bytes: some are not even text), from the HS256 secret.
HostileHeader = Callable[[bytes], bytes]


def _signed(secret: bytes, **changes: object) -> str:
    return jwt.encode(_claims(**changes), secret, algorithm="HS256")


def _tampered_payload(secret: bytes) -> bytes:
    header, _, signature = _signed(secret).split(".")
    return f"JWT {header}.{jwt_segment(_claims(sub='admin'))}.{signature}".encode()


def _tampered_header(secret: bytes) -> bytes:
    _, payload, signature = _signed(secret).split(".")
    return f"JWT {jwt_segment({'alg': 'HS384', 'typ': 'JWT'})}.{payload}.{signature}".encode()


HOSTILE: dict[str, HostileHeader] = {
    "alg_none": lambda s: f"JWT {jwt_segment({'alg': 'none', 'typ': 'JWT'})}.{jwt_segment(_claims())}.".encode(),
    "expired": lambda s: f"JWT {_signed(s, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600)}".encode(),
    "nbf_in_the_future": lambda s: f"JWT {_signed(s, nbf=int(time.time()) + 3600)}".encode(),
    "tampered_payload": _tampered_payload,
    "tampered_header": _tampered_header,
    "empty_token": lambda s: b"JWT ",
    "token_of_16_kb": lambda s: f"JWT {_signed(s, padding='p' * 12_000)}".encode(),
    "non_ascii_garbage": lambda s: "JWT ÿþ€ 漢字 garbage".encode() + b"\xff\xfe\x80",
    "no_exp": lambda s: f"JWT {_signed(s, exp=None)}".encode(),
    "wrong_aud": lambda s: f"JWT {_signed(s, aud='somebody-else')}".encode(),
    "wrong_iss": lambda s: f"JWT {_signed(s, iss='https://evil.test')}".encode(),
    "two_tokens_in_one_header": lambda s: f"JWT {_signed(s)} JWT {_signed(s, sub='other')}".encode(),
    "two_tokens_comma_separated": lambda s: f"JWT {_signed(s)}, {_signed(s, sub='other')}".encode(),
    "unknown_scheme": lambda s: f"Token {_signed(s)}".encode(),
    "signed_with_another_secret": lambda s: f"JWT {_signed(b'another-secret-of-at-least-32-bytes!!')}".encode(),
}


def _secret_parts(header_value: bytes) -> list[bytes]:
    """Pieces of a header that must never reach a log: the whole value after the scheme, each long segment."""
    credentials = header_value.partition(b" ")[2].strip()
    pieces = [credentials, *re.split(rb"[.\s,]+", credentials)]
    return [piece for piece in pieces if len(piece) >= 8]


def _request(path: str, authorization: bytes) -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: t\r\nAuthorization: " + authorization + b"\r\n\r\n"


def _close(request: bytes) -> bytes:
    return request[:-2] + b"Connection: close\r\n\r\n"


@pytest.mark.parametrize("case", sorted(HOSTILE))
async def test_hostile_token_gets_401_and_leaves_nothing_of_itself_in_the_logs(
    claims_settings, jwt_secret, caplog, case
):
    caplog.set_level(logging.DEBUG)
    header_value = HOSTILE[case](jwt_secret.encode())
    async with running(claims_settings) as server:
        status, answer = await raw_exchange(server.port, _close(_request("/chunked?limit=1", header_value)))
    assert status == 401
    assert b'"error": "unauthorized"' in answer
    assert b"WWW-Authenticate: Bearer" in answer
    logged = caplog.text.encode()
    assert caplog.records
    for piece in _secret_parts(header_value):
        assert piece not in logged, f"{piece[:20]!r}... reached the log"


async def test_a_good_token_passes_the_same_checks(claims_settings, jwt_secret):
    async with running(claims_settings) as server:
        good = f"JWT {_signed(jwt_secret.encode())}".encode()
        status, answer = await raw_exchange(server.port, _close(_request("/chunked?limit=1", good)))
    assert status == 200, answer


async def test_hs256_token_signed_with_the_rs256_public_key_gets_401(rsa_settings, public_pem, caplog):
    caplog.set_level(logging.DEBUG)
    confused = _hs256_by_hand({"alg": "HS256", "typ": "JWT"}, _claims(), public_pem)
    async with running(rsa_settings) as server:
        status, answer = await raw_exchange(server.port, _close(_request("/chunked", f"JWT {confused}".encode())))
    assert status == 401
    assert b"algorithm" in answer
    assert confused.split(".")[2].encode() not in caplog.text.encode()


async def test_header_line_beyond_the_parser_limit_gets_a_4xx_and_the_server_carries_on(
    claims_settings, jwt_secret, caplog
):
    caplog.set_level(logging.DEBUG)
    oversized = b"JWT " + b"q" * 40_000
    async with running(claims_settings) as server:
        status, _ = await raw_exchange(server.port, _close(_request("/chunked", oversized)))
        assert 400 <= status < 500
        good = f"JWT {_signed(jwt_secret.encode())}".encode()
        status, _ = await raw_exchange(server.port, _close(_request("/chunked?limit=1", good)))
        assert status == 200
    assert b"q" * 16 not in caplog.text.encode()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


# --- 10. parameters and headers -----------------------------------------------------------------------

SQL_INJECTIONS = (
    "1; DROP TABLE points",
    "1 OR 1=1",
    "0) UNION SELECT * FROM pg_user --",
    "'; DELETE FROM points; --",
    "ndjson'; TRUNCATE points; --",
    "1::text",
    "$1",
)
NAMES = ("format", "limit", "after_id", "page_size")
VALUES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.integers(min_value=0, max_value=ROWS + 10).map(str),
    st.sampled_from(("ndjson", "csv", "json", "text", "xml", "", " 1", "1e3", "0x10", "١٢", "NaN")),
    st.sampled_from(SQL_INJECTIONS),
    st.text(max_size=20),
)
_OPTIONAL_ROWS = st.none() | st.integers(min_value=0, max_value=ROWS + 10).map(str)
# Half the queries are well formed (so 200s and their bodies get checked), half anything at all.
QUERY = st.one_of(
    st.builds(
        lambda *pairs: [(name, value) for name, value in pairs if value is not None],
        st.tuples(st.just("format"), st.none() | st.sampled_from(("ndjson", "csv", "json", "text"))),
        st.tuples(st.just("limit"), _OPTIONAL_ROWS),
        st.tuples(st.just("after_id"), _OPTIONAL_ROWS),
    ),
    st.lists(st.tuples(st.one_of(st.sampled_from(NAMES), st.text(min_size=1, max_size=8)), VALUES), max_size=4),
)
MEDIA = st.sampled_from(
    ("application/x-ndjson", "text/csv", "application/json", "text/plain", "*/*", "text/*", "image/png", "text/html")
)
ACCEPT = st.one_of(
    st.none(),
    st.lists(st.tuples(MEDIA, st.sampled_from(("", ";q=0", ";q=0.5", ";q=1", ";q=x", ";level=1"))), max_size=3).map(
        lambda items: ", ".join(media + params for media, params in items)
    ),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
)
CONTENT_TYPE_FORMATS = {
    "application/x-ndjson": "ndjson",
    "text/csv": "csv",
    "application/json": "json",
    "text/plain": "text",
}
# /standard refuses more than this many rows with 413 in these tests, so 413 is among the answers.
STANDARD_MAX_ROWS = 2_000


def _expected_rows(query: list[tuple[str, str]]) -> tuple[int, int]:
    """(after_id, rows) a successful answer to this query must hold."""
    values = dict(query)
    after_id = int(values.get("after_id", 0))
    available = max(0, ROWS - after_id)
    limit = values.get("limit")
    return after_id, available if limit is None else min(int(limit), available)


@pytest.fixture
async def client_with_small_standard_cap(aiohttp_client, settings: Settings):
    return await aiohttp_client(create_app(settings.replace(standard_max_rows=STANDARD_MAX_ROWS)))


@hypothesis_settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    endpoint=st.sampled_from(("standard", "chunked")),
    query=QUERY,
    accept=ACCEPT,
    with_token=st.sampled_from((True,) * 9 + (False,)),  # about one in ten without a token
)
async def test_random_parameters_and_accept_headers_never_get_a_500(
    client_with_small_standard_cap, auth, endpoint, query, accept, with_token
):
    headers = dict(auth) if with_token else {}
    if accept is not None:
        headers["Accept"] = accept
    response = await client_with_small_standard_cap.get(f"/{endpoint}?{urlencode(query)}", headers=headers)
    body = await response.read()
    event(f"{endpoint} {response.status}")  # shown by --hypothesis-show-statistics
    assert response.status in (200, 400, 401, 406, 413), body[:300]
    if response.status != 200:
        assert json.loads(body)["error"]
        return
    fmt = CONTENT_TYPE_FORMATS[response.content_type]
    after_id, rows = _expected_rows(query)
    assert_rows(fmt, body, after_id, rows)


async def _table_fingerprint(url: str) -> tuple[int, str]:
    conn = await asyncpg.connect(url)
    try:
        count = await conn.fetchval("SELECT count(*) FROM points")
        digest = await conn.fetchval("SELECT md5(string_agg(p::text, ',' ORDER BY id)) FROM points p")
        return count, digest
    finally:
        await conn.close()


async def test_sql_in_any_parameter_or_header_changes_nothing(client, auth, database_url):
    before = await _table_fingerprint(database_url)
    for endpoint in ("standard", "chunked"):
        for name in NAMES:
            for injection in SQL_INJECTIONS:
                response = await client.get(f"/{endpoint}?{urlencode({name: injection})}", headers=auth)
                assert response.status == 400, (endpoint, name, injection)
                assert (await response.json())["parameter"] == name
        for injection in SQL_INJECTIONS:
            response = await client.get(f"/{endpoint}", headers={**auth, "Accept": injection})
            assert response.status == 406
    assert await _table_fingerprint(database_url) == before
    assert before[0] == ROWS
