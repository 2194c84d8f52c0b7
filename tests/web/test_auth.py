"""JWT: what the data routes accept, and a 401 JSON with WWW-Authenticate (never a 500) for all the rest."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from streaming_api.settings import Settings
from streaming_api.tokens import load_keys, mint_token
from streaming_api.web.app import create_app
from tests.support.bodies import ENDPOINTS
from tests.support.tokens import b64url, jwt_segment


def _claims(**changes: object) -> dict:
    now = int(time.time())
    claims = {"sub": "test", "iat": now, "exp": now + 600}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def _hs256_by_hand(claims: dict, key: bytes) -> str:
    """An HS256 token built without PyJWT, which refuses to use a PEM key as an HMAC secret."""
    signing_input = f"{jwt_segment({'alg': 'HS256', 'typ': 'JWT'})}.{jwt_segment(claims)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


async def _assert_unauthorized(client, path: str, headers: dict[str, str], reason: str) -> None:
    response = await client.get(path, headers=headers)
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.headers["Content-Type"].startswith("application/json")
    error = await response.json()
    assert error["error"]
    assert reason in error["detail"].lower()


# --- accepted --------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["JWT", "Bearer", "bearer"])
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_valid_token_is_accepted_with_either_scheme(client, token, endpoint, scheme):
    response = await client.get(f"/{endpoint}?limit=1", headers={"Authorization": f"{scheme} {token}"})
    assert response.status == 200


# --- rejected --------------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_missing_header_is_rejected(client, endpoint):
    await _assert_unauthorized(client, f"/{endpoint}", {}, "missing")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_basic_scheme_is_rejected(client, endpoint):
    credentials = base64.b64encode(b"user:password").decode()
    await _assert_unauthorized(client, f"/{endpoint}", {"Authorization": f"Basic {credentials}"}, "scheme")


@pytest.mark.parametrize("token", ["not-a-token", "a.b.c", "x.y", "eyJhbGciOiJIUzI1NiJ9.@@@.sig", "é.é.é"])
async def test_malformed_token_is_rejected(client, token):
    await _assert_unauthorized(client, "/chunked", {"Authorization": f"JWT {token}"}, "malformed")


async def test_empty_token_is_rejected(client):
    response = await client.get("/chunked", headers={"Authorization": "JWT "})
    assert response.status == 401
    assert "WWW-Authenticate" in response.headers


async def test_token_signed_with_another_secret_is_rejected(client):
    forged = jwt.encode(_claims(), "another-secret-of-at-least-32-bytes!!", algorithm="HS256")
    await _assert_unauthorized(client, "/chunked", {"Authorization": f"JWT {forged}"}, "signature")


async def test_token_with_tampered_claims_is_rejected(client, token):
    header, _, signature = token.split(".")
    tampered = f"{header}.{jwt_segment(_claims(sub='admin'))}.{signature}"
    await _assert_unauthorized(client, "/chunked", {"Authorization": f"JWT {tampered}"}, "signature")


async def test_expired_token_is_rejected(client, jwt_secret):
    now = int(time.time())
    expired = jwt.encode(_claims(iat=now - 7200, exp=now - 3600), jwt_secret, algorithm="HS256")
    await _assert_unauthorized(client, "/chunked", {"Authorization": f"JWT {expired}"}, "expired")


async def test_token_not_yet_valid_is_rejected(client, jwt_secret):
    early = jwt.encode(_claims(nbf=int(time.time()) + 3600), jwt_secret, algorithm="HS256")
    await _assert_unauthorized(client, "/chunked", {"Authorization": f"JWT {early}"}, "nbf")


async def test_alg_none_is_rejected(client):
    unsigned = f"{jwt_segment({'alg': 'none', 'typ': 'JWT'})}.{jwt_segment(_claims())}."
    await _assert_unauthorized(client, "/chunked", {"Authorization": f"JWT {unsigned}"}, "algorithm")


async def test_token_without_exp_is_rejected(client, jwt_secret):
    forever = jwt.encode(_claims(exp=None), jwt_secret, algorithm="HS256")
    await _assert_unauthorized(client, "/chunked", {"Authorization": f"JWT {forever}"}, "exp")


async def test_two_authorization_headers_are_rejected(client, token):
    response = await client.get("/chunked", headers=[("Authorization", f"JWT {token}")] * 2)
    assert response.status == 401
    assert "WWW-Authenticate" in response.headers


async def test_healthz_needs_no_token(client):
    response = await client.get("/healthz")
    assert response.status == 200


async def test_rejected_token_is_not_logged(client, caplog):
    forged = jwt.encode(_claims(), "another-secret-of-at-least-32-bytes!!", algorithm="HS256")
    with caplog.at_level(logging.DEBUG):
        response = await client.get("/chunked", headers={"Authorization": f"JWT {forged}"})
    assert response.status == 401
    assert caplog.records, "the request should have been logged"
    assert forged not in caplog.text
    assert forged.split(".")[2] not in caplog.text


# --- audience and issuer ---------------------------------------------------------------------------


@pytest.fixture
async def claims_client(aiohttp_client, settings: Settings):
    return await aiohttp_client(create_app(settings.replace(jwt_audience="exports", jwt_issuer="https://issuer.test")))


async def test_token_with_configured_aud_and_iss_is_accepted(claims_client, jwt_secret):
    good = jwt.encode(_claims(aud="exports", iss="https://issuer.test"), jwt_secret, algorithm="HS256")
    response = await claims_client.get("/chunked?limit=1", headers={"Authorization": f"JWT {good}"})
    assert response.status == 200


@pytest.mark.parametrize("aud", ["somebody-else", None])
async def test_wrong_or_missing_audience_is_rejected(claims_client, jwt_secret, aud):
    bad = jwt.encode(_claims(aud=aud, iss="https://issuer.test"), jwt_secret, algorithm="HS256")
    await _assert_unauthorized(claims_client, "/chunked", {"Authorization": f"JWT {bad}"}, "aud")


@pytest.mark.parametrize("iss", ["https://evil.test", None])
async def test_wrong_or_missing_issuer_is_rejected(claims_client, jwt_secret, iss):
    bad = jwt.encode(_claims(aud="exports", iss=iss), jwt_secret, algorithm="HS256")
    await _assert_unauthorized(claims_client, "/chunked", {"Authorization": f"JWT {bad}"}, "iss")


# --- RS256 -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def rsa_public_pem(rsa_key: rsa.RSAPrivateKey) -> bytes:
    return rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture
def rsa_settings(settings: Settings, tmp_path: Path, rsa_key: rsa.RSAPrivateKey, rsa_public_pem: bytes) -> Settings:
    private_file = tmp_path / "private.pem"
    public_file = tmp_path / "public.pem"
    private_file.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public_file.write_bytes(rsa_public_pem)
    return settings.replace(
        jwt_secret=None,
        jwt_algorithms=("RS256",),
        jwt_public_key_file=str(public_file),
        jwt_private_key_file=str(private_file),
    )


@pytest.fixture
async def rsa_client(aiohttp_client, rsa_settings: Settings):
    return await aiohttp_client(create_app(rsa_settings))


async def test_rs256_token_is_accepted_when_configured(rsa_client, rsa_settings):
    good = mint_token(load_keys(rsa_settings), subject="test", ttl=600)
    assert jwt.get_unverified_header(good)["alg"] == "RS256"
    response = await rsa_client.get("/chunked?limit=1", headers={"Authorization": f"JWT {good}"})
    assert response.status == 200


async def test_hs256_token_signed_with_the_public_key_is_rejected(rsa_client, rsa_public_pem):
    confused = _hs256_by_hand(_claims(), rsa_public_pem)
    await _assert_unauthorized(rsa_client, "/chunked", {"Authorization": f"JWT {confused}"}, "algorithm")


async def test_hs256_token_with_the_shared_secret_is_rejected_under_rs256(rsa_client, jwt_secret):
    hs = jwt.encode(_claims(), jwt_secret, algorithm="HS256")
    await _assert_unauthorized(rsa_client, "/chunked", {"Authorization": f"JWT {hs}"}, "algorithm")
