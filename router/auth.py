"""Bearer-key check: which caller a request comes from. Keys are looked up by SHA-256
digest (policies/teams.py), so a lookup does not leak a key's prefix through timing and
keys are never held or logged in clear."""

from __future__ import annotations

from typing import Any

from litestar import Request

from policies.errors import ApiError
from policies.teams import ANONYMOUS, Caller
from router.gateway import Gateway
from router.incoming import HTTPRequest


def authenticate(request: HTTPRequest, gateway: Gateway) -> Caller:
    if gateway.open_access:
        return ANONYMOUS
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise ApiError(
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            status=401,
        )
    caller = gateway.keys.lookup(key)
    if caller is None:
        raise ApiError(
            f"Incorrect API key provided: {_redact(key)}.", status=401, code="invalid_api_key"
        )
    return caller


def authenticate_api_key(request: HTTPRequest, gateway: Gateway) -> Caller:
    """The Anthropic-shaped door's check: Anthropic's `x-api-key: <key>` header, else a
    Bearer key (the current Anthropic SDKs send either); the same keys and teams."""
    if gateway.open_access:
        return ANONYMOUS
    key = request.headers.get("x-api-key", "").strip()
    if not key:
        return authenticate(request, gateway)
    caller = gateway.keys.lookup(key)
    if caller is None:
        raise ApiError("invalid x-api-key", status=401, code="invalid_api_key")
    return caller


def require_admin(request: Request[Any, Any, Any], gateway: Gateway) -> Caller:
    """Admin endpoints: 401 without a valid key, 403 with a key that is not an admin's."""
    caller = authenticate(request, gateway)
    if not caller.admin:
        raise ApiError(
            "This endpoint needs an admin key (config `keys: [{key: ..., admin: true}]`).",
            status=403,
            type="permission_error",
            code="admin_required",
        )
    return caller


def _redact(key: str) -> str:
    return "*" * len(key) if len(key) < 8 else f"{key[:3]}{'*' * (len(key) - 7)}{key[-4:]}"
