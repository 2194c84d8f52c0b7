"""JWTs: key loading, minting and verification (PyJWT). The web middleware that applies them is web.middleware.auth."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from .settings import Settings

log = logging.getLogger(__name__)

SCHEMES = ("jwt", "bearer")
# Anything longer is refused before parsing; real tokens are a few hundred bytes.
MAX_TOKEN_BYTES = 8192


@dataclass(frozen=True)
class Keys:
    algorithms: tuple[str, ...]
    verify_key: Any
    signing_key: Any | None
    audience: str | None
    issuer: str | None
    leeway: int


def secret_file(settings: Settings) -> Path:
    return settings.data_path / "jwt_secret"


def _generated_secret(path: Path) -> bytes:
    """A random 32-byte secret kept in the data directory (mode 0600), made once, so tokens survive restarts.

    Written whole under a name of its own, then linked into place: processes starting together (workers,
    a server and `run.py token`) see no file or the whole secret, never half of one, and all keep the
    first that was linked."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, written = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32) + "\n")
            with contextlib.suppress(FileExistsError):
                os.link(written, path)
                log.info("generated a JWT secret in %s", path)
        finally:
            os.unlink(written)
    return bytes.fromhex(path.read_text().strip())


def load_keys(settings: Settings) -> Keys:
    if settings.jwt_algorithms[0].startswith("HS"):
        secret = settings.jwt_secret.encode() if settings.jwt_secret else _generated_secret(secret_file(settings))
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
    )


def mint_token(keys: Keys, subject: str = "cli", ttl: int = 3600) -> str:
    if keys.signing_key is None:
        raise RuntimeError("no signing key: set jwt_private_key_file to mint RS*/ES* tokens")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": subject, "iat": now, "nbf": now, "exp": now + ttl}
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
    if len(token) > MAX_TOKEN_BYTES:
        raise AuthError(f"token longer than {MAX_TOKEN_BYTES} bytes")
    if not _TOKEN_CHARS.fullmatch(token):
        # Catches two tokens in one header, stray characters and non-ASCII before PyJWT sees them.
        raise AuthError("malformed token")
    try:
        return jwt.decode(
            token,
            keys.verify_key,
            algorithms=list(keys.algorithms),
            audience=keys.audience,
            issuer=keys.issuer,
            leeway=keys.leeway,
            options={"require": ["exp"]},
        )
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
