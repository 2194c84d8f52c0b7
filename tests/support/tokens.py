"""Pieces of JWTs crafted by hand (for tokens PyJWT would refuse to make)."""

from __future__ import annotations

import base64
import json


def b64url(data: bytes) -> str:
    """Base64url without padding, as in a JWT."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt_segment(obj: dict) -> str:
    """A JWT header or payload segment, for tokens crafted by hand."""
    return b64url(json.dumps(obj, separators=(",", ":")).encode())
