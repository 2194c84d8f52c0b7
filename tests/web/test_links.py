"""Links for tools without headers: a URL whose sig= opens that one export (and its resumes) until it
expires, with the grant of whoever made it; anything altered, expired or made for another export is a 401
JSON; the signature is no token in a header, a token is no signature; and the logs never hold it."""

from __future__ import annotations

import logging
from urllib.parse import quote

import jwt
import pytest

from streaming_api.grants import grant_claims
from streaming_api.links import sign
from streaming_api.tokens import load_keys, mint_token
from streaming_api.web.app import create_app
from tests.support import grants
from tests.support.bodies import ids
from tests.support.pg import ROWS

ACCESS_LOG = "streaming_api.access"


@pytest.fixture
def link(settings):
    keys = load_keys(settings)
    return lambda target, ttl=600, **claims: sign(keys, target, ttl, grant_claims(**claims))


async def _get(client, path: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, bytes]:
    async with client.request(method, path, headers=headers or {}) as response:
        return response.status, await response.read()


async def test_a_link_opens_its_export_with_no_header(client, auth, link):
    target = "/chunked/points.csv?columns=id,label&limit=50"
    status, body = await _get(client, link(target))
    assert status == 200
    assert body == (await _get(client, target, auth))[1]
    assert body.startswith(b"id,label\n") and body.count(b"\n") == 51


@pytest.mark.parametrize("target", ["/standard?format=json&limit=7", "/chunked", "/chunked.ndjson?page_size=10"])
async def test_a_link_opens_any_export_and_its_head(client, auth, link, target):
    signed = link(target)
    assert (await _get(client, signed))[1] == (await _get(client, target, auth))[1]
    assert (await _get(client, signed, method="HEAD"))[0] == 200


async def test_a_link_opens_its_resumes(client, link):
    signed = link("/chunked/points.csv?page_size=100")
    async with client.get(signed) as first:
        snapshot = first.headers["X-Snapshot"]
        await first.read()
    status, rest = await _get(client, f"{signed}&after=2000&snapshot={snapshot}")
    assert status == 200
    assert ids("csv", rest) == list(range(2001, ROWS + 1))
    status, rest = await _get(client, f"{signed}&after_id={ROWS - 5}")
    assert ids("csv", rest) == list(range(ROWS - 4, ROWS + 1))


async def test_a_link_opens_its_export_with_the_parameters_reordered_or_encoded_otherwise(client, link):
    signed = link("/chunked/points?format=csv&columns=id,label&limit=5")
    path, _, query = signed.partition("?")
    parameters = query.split("&")
    reordered = f"{path}?{'&'.join(reversed(parameters))}"
    assert (await _get(client, reordered))[0] == 200
    encoded = signed.replace("columns=id,label", "columns=id%2Clabel").replace("format=csv", "for%6Dat=csv")
    assert (await _get(client, encoded))[0] == 200


@pytest.mark.parametrize(
    ("change", "to"),
    [
        ("limit=5", "limit=6"),
        ("limit=5", "limit=5&columns=id"),
        ("limit=5&", ""),
        ("?limit=5", "?page_size=7&limit=5"),
        ("/chunked/points.csv", "/standard/points.csv"),
        ("/chunked/points.csv", "/chunked/points.ndjson"),
        ("/chunked/points.csv", "/chunked/points"),
    ],
)
async def test_a_link_altered_is_a_401(client, link, change, to):
    signed = link("/chunked/points.csv?limit=5&columns=id,x")
    altered = signed.replace(change, to, 1)
    assert altered != signed
    response = await client.get(altered)
    assert response.status == 401
    assert response.content_type == "application/json"
    assert "does not open this URL" in (await response.json())["detail"]


async def test_a_link_whose_signature_is_altered_is_a_401(client, link):
    signed = link("/chunked?limit=5")
    last = signed[-1]
    response = await client.get(signed[:-1] + ("A" if last != "A" else "B"))
    assert response.status == 401
    assert "bad link" in (await response.json())["detail"]


async def test_an_expired_link_is_a_401(client, settings):
    # Past the 30 s of clock skew tolerated.
    expired = sign(load_keys(settings), "/chunked?limit=5", -60, {})
    response = await client.get(expired)
    assert response.status == 401
    assert "expired" in (await response.json())["detail"]


async def test_a_links_signature_is_no_token_in_a_header(client, link):
    signature = link("/chunked?limit=5").rpartition("sig=")[2]
    for path in ("/chunked?limit=5", "/tables"):
        response = await client.get(path, headers={"Authorization": f"JWT {signature}"})
        assert response.status == 401
        assert "not a token" in (await response.json())["detail"]


async def test_a_token_is_no_links_signature(client, token):
    response = await client.get(f"/chunked?limit=5&sig={token}")
    assert response.status == 401
    assert "send it in a header" in (await response.json())["detail"]


@pytest.mark.parametrize("path", ["/tables", "/openapi.json"])
async def test_a_link_opens_nothing_but_exports(client, link, path):
    signature = link("/chunked?limit=5").rpartition("sig=")[2]
    assert (await _get(client, f"{path}?sig={signature}"))[0] == 401


async def test_a_link_with_a_header_as_well_is_a_401(client, auth, link):
    response = await client.get(link("/chunked?limit=5"), headers=auth)
    assert response.status == 401
    assert "one or the other" in (await response.json())["detail"]


async def test_the_links_signature_never_reaches_the_access_log(client, link, caplog):
    signed = link("/chunked?limit=1")
    with caplog.at_level(logging.INFO, logger=ACCESS_LOG):
        assert (await _get(client, signed))[0] == 200
        assert (await _get(client, signed.replace("limit=1", "limit=2")))[0] == 401
    lines = [record.getMessage() for record in caplog.records if record.name == ACCESS_LOG]
    assert len(lines) == 2
    signature = signed.rpartition("sig=")[2]
    for line in lines:
        assert "sig=[redacted]" in line
        assert signature not in line and signature.split(".")[1] not in line


# --- the grant a link carries ----------------------------------------------------------------------


async def test_a_link_carries_the_tables_of_whoever_made_it(aiohttp_client, grants_settings):
    client = await aiohttp_client(create_app(grants_settings))
    keys = load_keys(grants_settings)
    assert (await _get(client, sign(keys, "/chunked/notes", 60, grant_claims(tables=["notes"]))))[0] == 200
    assert (await _get(client, sign(keys, "/chunked/points", 60, grant_claims(tables=["notes"]))))[0] == 403


async def test_a_link_carries_the_role_of_whoever_made_it(aiohttp_client, grants_settings):
    client = await aiohttp_client(create_app(grants_settings))
    signed = sign(load_keys(grants_settings), "/chunked/points.csv", 60, grant_claims(role=grants.ANALYST))
    status, body = await _get(client, signed)
    assert status == 200
    assert grants.ids_of("csv", body) == grants.ANALYST_IDS


# --- POST /links: the page's links, made with the caller's token ------------------------------------


async def test_post_links_makes_a_link_with_the_callers_grant(aiohttp_client, grants_settings, mint):
    client = await aiohttp_client(create_app(grants_settings))
    token = mint(role=grants.ANALYST, tables=["points"])
    made = await client.post(
        "/links", json={"path": "/chunked/points.csv?limit=10", "ttl": 60}, headers={"Authorization": f"JWT {token}"}
    )
    assert made.status == 200
    answer = await made.json()
    assert answer["url"].endswith(answer["path"]) and answer["url"].startswith("http://")
    status, body = await _get(client, answer["path"])
    assert status == 200
    assert grants.ids_of("csv", body) == grants.ANALYST_IDS[:10]
    other = answer["path"].replace("/chunked/points.csv", "/chunked/notes.csv")
    assert (await _get(client, other))[0] == 401


async def test_post_links_never_outlives_the_token_that_asks(client, settings):
    token = mint_token(load_keys(settings), ttl=120)
    made = await client.post(
        "/links", json={"path": "/chunked", "ttl": 10**9}, headers={"Authorization": f"JWT {token}"}
    )
    answer = await made.json()
    claims = jwt.decode(answer["path"].rpartition("sig=")[2], options={"verify_signature": False})
    assert claims["exp"] <= jwt.decode(token, options={"verify_signature": False})["exp"]


@pytest.mark.parametrize(
    "body",
    [
        {"path": "/tables"},
        {"path": "http://elsewhere/chunked"},
        {"path": "/chunked?sig=x"},
        {"path": 5},
        {"path": "/chunked", "ttl": 0},
        {"path": "/chunked", "ttl": "60"},
        ["/chunked"],
    ],
)
async def test_post_links_refuses_what_is_not_an_export_with_a_400(client, auth, body):
    response = await client.post("/links", json=body, headers=auth)
    assert response.status == 400
    assert (await response.json())["error"] == "bad_parameter"


async def test_post_links_needs_a_token_in_the_header(client, link):
    signature = link("/chunked").rpartition("sig=")[2]
    response = await client.post(f"/links?sig={quote(signature)}", json={"path": "/chunked"})
    assert response.status == 401


async def test_a_413_on_a_standard_link_points_to_chunked_without_the_signature(aiohttp_client, settings):
    capped = settings.replace(standard_max_rows=10)
    client = await aiohttp_client(create_app(capped))
    response = await client.get(sign(load_keys(capped), "/standard/points.csv?columns=id", 60, {}))
    assert response.status == 413
    pointer = (await response.json())["chunked"]
    assert pointer == "/chunked/points.csv?columns=id"
