"""JWTs: key loading, minting and verification (PyJWT). The web middleware that applies them is web.middleware.auth."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from .settings import Settings, SettingsError

log = logging.getLogger(__name__)

SCHEMES = ("jwt", "bearer")
# Anything longer is refused before parsing; real tokens are a few hundred bytes.
MAX_TOKEN_BYTES = 8192
# HS* secrets: at least this long (RFC 7518: a key as long as the hash); a generated one is this much randomness.
MIN_SECRET_BYTES = 32
GENERATED_SECRET_BYTES = 32
# The claim a link's signature carries (links.py): never accepted as a token in a header.
LINK_CLAIM = "link"
# The file as older versions wrote it: 32 random bytes as hex, the key being the bytes (see _former_key).
FORMER_SECRET = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Keys:
    algorithms: tuple[str, ...]
    verify_key: Any
    signing_key: Any | None
    audience: str | None
    issuer: str | None
    leeway: int
    # A key that also verifies (never signs): the one an older version used for the same secret file.
    former_verify_key: bytes | None = None


def secret_file(settings: Settings) -> Path:
    return settings.data_path / "jwt_secret"


def _generated_secret(path: Path) -> str:
    """The secret kept in the data directory (mode 0600), made once so tokens survive restarts: its text,
    stripped, is the key, as JWT_SECRET's text is (a consumer signs with what the file holds).

    Written whole under a name of its own, then linked into place: processes starting together (workers,
    a server and `run.py token`) see no file or the whole secret, never half of one, and all keep the
    first that was linked."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, written = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(GENERATED_SECRET_BYTES) + "\n")
            with contextlib.suppress(FileExistsError):
                os.link(written, path)
                log.info("generated a JWT secret in %s", path)
        finally:
            os.unlink(written)
    text = path.read_text().strip()
    if len(text.encode()) < MIN_SECRET_BYTES:
        raise SettingsError(
            f"{path} holds fewer than {MIN_SECRET_BYTES} bytes: put a longer secret in it, or delete it to have one "
            "generated (value not shown)"
        )
    return text


def _former_key(text: str) -> bytes | None:
    """The key older versions used for a file they wrote (64 hex digits): the 32 bytes the digits spell."""
    return bytes.fromhex(text) if FORMER_SECRET.fullmatch(text) else None


def load_keys(settings: Settings) -> Keys:
    former = None
    if settings.jwt_algorithms[0].startswith("HS"):
        if settings.jwt_secret:
            secret = settings.jwt_secret.encode()
        else:
            text = _generated_secret(secret_file(settings))
            secret, former = text.encode(), _former_key(text)
        verify_key = signing_key = secret
    else:
        assert settings.jwt_public_key_file  # checked by config
        verify_key = Path(settings.jwt_public_key_file).read_bytes()
        private = settings.jwt_private_key_file
        signing_key = Path(private).read_bytes() if private else None
    return Keys(
        algorithms=settings.jwt_algorithms,
        verify_key=verify_key,
        signing_key=signing_key,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        leeway=settings.jwt_leeway,
        former_verify_key=former,
    )


def mint_token(keys: Keys, subject: str = "cli", ttl: int = 3600, extra: Mapping[str, Any] | None = None) -> str:
    """A token for `ttl` seconds; `extra`: more claims (a grant's tables and role, a link's target)."""
    if keys.signing_key is None:
        raise RuntimeError("no signing key: set jwt_private_key_file to mint RS*/ES* tokens")
    now = int(time.time())
    claims: dict[str, Any] = {**(extra or {}), "sub": subject, "iat": now, "nbf": now, "exp": now + ttl}
    if keys.audience:
        claims["aud"] = keys.audience
    if keys.issuer:
        claims["iss"] = keys.issuer
    return jwt.encode(claims, keys.signing_key, algorithm=keys.algorithms[0])


class AuthError(Exception):
    def __init__(self, detail: str, token_presented: bool = True) -> None:
        super().__init__(detail)
        self.detail = detail
        self.token_presented = token_presented


_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "token expired"),
    (jwt.ImmatureSignatureError, "token not yet valid (nbf or iat is in the future)"),
    (jwt.InvalidSignatureError, "bad signature"),
    (jwt.InvalidAlgorithmError, "token algorithm not allowed"),
    (jwt.InvalidAudienceError, "wrong audience (aud)"),
    (jwt.InvalidIssuerError, "wrong issuer (iss)"),
    (jwt.InvalidIssuedAtError, "bad issued-at (iat)"),
    (jwt.DecodeError, "malformed token"),
)
_TOKEN_CHARS = re.compile(r"[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*")


def verify(keys: Keys, authorization: str | None) -> dict[str, Any]:
    """The token's claims, or AuthError saying what is wrong (never echoing the token)."""
    if authorization is None or not authorization.strip():
        raise AuthError(
            "missing Authorization header: send 'Authorization: JWT <token>' (python run.py token prints one)",
            token_presented=False,
        )
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() not in SCHEMES:
        raise AuthError("unsupported authorization scheme: use 'JWT <token>' or 'Bearer <token>'")
    token = token.strip()
    if not token:
        raise AuthError("empty token")
    claims = decode(keys, token)
    if LINK_CLAIM in claims:
        # A link's signature opens one export: lifted into a header it must open nothing else.
        raise AuthError("a link's signature is not a token: it works only in the link it came with")
    return claims


def decode(keys: Keys, token: str) -> dict[str, Any]:
    """The claims of a token or a link's signature, or AuthError saying what is wrong (exp is always
    required)."""
    if len(token) > MAX_TOKEN_BYTES:
        raise AuthError(f"token longer than {MAX_TOKEN_BYTES} bytes")
    if not _TOKEN_CHARS.fullmatch(token):
        # Catches two tokens in one header, stray characters and non-ASCII before PyJWT sees them.
        raise AuthError("malformed token")
    try:
        try:
            return _decode(keys, token, keys.verify_key)
        except jwt.InvalidSignatureError:
            if keys.former_verify_key is None:
                raise
            # Signed before the upgrade with the former key of the same secret file: still good until it expires.
            return _decode(keys, token, keys.former_verify_key)
    except jwt.MissingRequiredClaimError as exc:
        # exp is always required, aud and iss when configured: name the one that is missing.
        raise AuthError(f"token lacks the required claim {exc.claim}") from None
    except jwt.InvalidTokenError as exc:
        for kind, reason in _REASONS:
            if isinstance(exc, kind):
                raise AuthError(reason) from None
        raise AuthError("invalid token") from None
    except (ValueError, TypeError):
        raise AuthError("malformed token") from None


def _decode(keys: Keys, token: str, key: Any) -> dict[str, Any]:
    return jwt.decode(
        token,
        key,
        algorithms=list(keys.algorithms),
        audience=keys.audience,
        issuer=keys.issuer,
        leeway=keys.leeway,
        options={"require": ["exp"]},
    )
