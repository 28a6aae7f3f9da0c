"""OpenAI's error envelope, for every error Turnout answers, whatever raised it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import orjson
import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException

from policies.errors import ApiError
from providers.errors import UpstreamError

log = structlog.get_logger("turnout.router")

_HTTP_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
}


def envelope(
    message: str, type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    type: str,
    param: str | None = None,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response[bytes]:
    return Response(
        content=orjson.dumps(envelope(message, type, param, code)),
        status_code=status,
        media_type="application/json",
        headers=dict(headers or {}),
    )


def from_api_error(exc: ApiError) -> Response[bytes]:
    return error_response(exc.status, exc.message, exc.type, exc.param, exc.code, exc.headers)


def from_upstream_error(exc: UpstreamError) -> Response[bytes]:
    return error_response(
        exc.status, exc.message, exc.type, exc.param, exc.code, upstream_headers(exc)
    )


def upstream_headers(exc: UpstreamError) -> dict[str, str]:
    """HTTP defines Retry-After for both a rate limit and every deployment unavailable."""
    if exc.status in (429, 503) and exc.retry_after is not None:
        # Rounded up: a client told to come back too early would only be refused again.
        return {"retry-after": str(max(1, math.ceil(exc.retry_after)))}
    return {}


def stream_error_payload(exc: UpstreamError) -> dict[str, Any]:
    return envelope(exc.message, exc.type, exc.param, exc.code)


def handle_api_error(_: Request[Any, Any, Any], exc: ApiError) -> Response[bytes]:
    return from_api_error(exc)


def handle_upstream_error(_: Request[Any, Any, Any], exc: UpstreamError) -> Response[bytes]:
    return from_upstream_error(exc)


def handle_http_exception(_: Request[Any, Any, Any], exc: HTTPException) -> Response[bytes]:
    status = exc.status_code
    kind = _HTTP_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    return error_response(status, str(exc.detail), kind, _param(exc), headers=exc.headers)


def _param(exc: HTTPException) -> str | None:
    """The parameter Litestar's own validation named (a query parameter of the wrong
    type, e.g. `?limit=abc`), as OpenAI's `param`."""
    extra = exc.extra
    if isinstance(extra, list) and extra and isinstance(extra[0], dict):
        key = extra[0].get("key")
        return key if isinstance(key, str) else None
    return None


def handle_unexpected(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    """The last line: log the traceback, answer the envelope, never leak the trace."""
    log.error("unhandled_error", path=request.url.path, exc_info=exc)
    return error_response(
        500, "The server had an error while processing your request.", "server_error"
    )


EXCEPTION_HANDLERS: Mapping[Any, Any] = {
    ApiError: handle_api_error,
    UpstreamError: handle_upstream_error,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}
