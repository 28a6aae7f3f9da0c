"""Anthropic's error bodies and stream `error` events, as Turnout's `UpstreamError`.

Anthropic answers `{"type": "error", "error": {"type", "message"}}`. Its types are mapped
to OpenAI's so retry and failover read them like any other backend's: 529 overloaded
becomes a retryable 503, and "prompt is too long" becomes `context_length_exceeded`
so context-window fallbacks apply.
"""

from __future__ import annotations

from typing import Any

import orjson

from providers.errors import Failure, UpstreamError, upstream_said

# Anthropic error type → (OpenAI-ish type, code, status override or None); read the other
# way by the Anthropic-shaped front door (router/messages/from_chat.py).
ERROR_TYPES: dict[str, tuple[str, str | None, int | None]] = {
    "invalid_request_error": ("invalid_request_error", None, None),
    "authentication_error": ("authentication_error", None, None),
    "permission_error": ("permission_error", None, None),
    "not_found_error": ("not_found_error", None, None),
    "request_too_large": ("request_too_large", None, 413),
    "rate_limit_error": ("rate_limit_exceeded", "rate_limit_exceeded", 429),
    "api_error": ("server_error", None, None),
    "overloaded_error": ("overloaded_error", None, 503),
}
STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
# Status of a mid-stream `error` event, which has no HTTP status of its own.
_STREAM_STATUSES = {"overloaded_error": 503, "rate_limit_error": 429, "api_error": 500}
_CONTEXT_MESSAGES = ("prompt is too long", "exceed context limit", "context window")


def error_from_response(
    status: int, content: bytes, retry_after: float | None, origin: str = "anthropic"
) -> UpstreamError:
    """An error status from Anthropic, keeping its message and (mapped) type; the whole
    body goes to `detail`, for the log."""
    fields = _error_fields(content)
    if fields is None:
        text = content[:500].decode("utf-8", errors="replace").strip() or f"HTTP {status}"
        fields = {"message": f"{origin}: {text}"}
    if status == 529:
        status = 503
    if not 400 <= status <= 599:
        status = 502
    error = _upstream_error(fields, status, Failure.STATUS, retry_after)
    error.detail = upstream_said(content)
    return error


def error_from_event(data: Any) -> UpstreamError:
    """A mid-stream `event: error`: the stream is broken, with a status from its type."""
    fields = data.get("error") if isinstance(data, dict) else None
    if not isinstance(fields, dict):
        fields = {"type": "api_error", "message": "stream error event without details"}
    status = _STREAM_STATUSES.get(str(fields.get("type")), 502)
    return _upstream_error(fields, status, Failure.STREAM_BROKEN, None)


def unsupported(param: str, detail: str = "") -> UpstreamError:
    """A 400 for a request option Anthropic has no equivalent of."""
    suffix = f" ({detail})" if detail else ""
    return UpstreamError(
        f"`{param}` is not supported by Anthropic deployments{suffix}",
        failure=Failure.STATUS,
        status=400,
        type="invalid_request_error",
        code="unsupported_parameter",
        param=param,
    )


def invalid(message: str, param: str) -> UpstreamError:
    """A 400 for a request that cannot be expressed in Anthropic's wire format."""
    return UpstreamError(
        message, failure=Failure.STATUS, status=400, type="invalid_request_error", param=param
    )


def _error_fields(content: bytes) -> dict[str, Any] | None:
    try:
        payload = orjson.loads(content) if content else None
    except orjson.JSONDecodeError:
        return None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        return error
    if isinstance(error, str):
        return {"message": error}
    return None


def _upstream_error(
    fields: dict[str, Any], status: int, failure: Failure, retry_after: float | None
) -> UpstreamError:
    anthropic_type = str(fields.get("type") or STATUS_TYPES.get(status, "api_error"))
    message = str(fields.get("message") or f"Anthropic error {status}")
    openai_type, code, forced_status = ERROR_TYPES.get(anthropic_type, (anthropic_type, None, None))
    if failure is Failure.STATUS and forced_status is not None:
        status = forced_status
    if anthropic_type == "invalid_request_error" and any(
        phrase in message.lower() for phrase in _CONTEXT_MESSAGES
    ):
        code = "context_length_exceeded"
    return UpstreamError(
        message,
        failure=failure,
        status=status,
        type=openai_type,
        code=code,
        retry_after=retry_after,
    )
