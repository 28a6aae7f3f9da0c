"""Bearer-key check. Keys are compared as SHA-256 digests, so the set lookup does not
leak a key's prefix through timing and keys are never held or logged in clear."""

from __future__ import annotations

from typing import Any

from litestar import Request

from policies.errors import ApiError
from router.gateway import Gateway, digest


def authenticate(request: Request[Any, Any, Any], gateway: Gateway) -> None:
    if gateway.open_access:
        return
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise ApiError(
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            status=401,
        )
    if digest(key) not in gateway.key_digests:
        raise ApiError(
            f"Incorrect API key provided: {_redact(key)}.", status=401, code="invalid_api_key"
        )


def _redact(key: str) -> str:
    return "*" * len(key) if len(key) < 8 else f"{key[:3]}{'*' * (len(key) - 7)}{key[-4:]}"
