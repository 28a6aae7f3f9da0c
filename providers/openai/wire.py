"""Pure translation between Turnout's normalized types and OpenAI's wire format."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from providers.errors import Failure, UpstreamError, upstream_said
from providers.sse import SSEEvent
from providers.types import JSONObject, ProviderRequest

DONE = "[DONE]"
# The Responses API's last events: its streams have no [DONE], the server closes them.
RESPONSE_ENDS = frozenset({"response.completed", "response.failed", "response.incomplete"})

_DEFAULT_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_exceeded",
}


def to_wire(body: Mapping[str, Any]) -> bytes:
    return orjson.dumps(body)


def error_from_response(
    status: int, content: bytes, retry_after: float | None, origin: str
) -> UpstreamError:
    """An error status from the backend, keeping its type, code, param and message; the
    whole body goes to `detail`, for the log."""
    error = _error_from_body(status, content, retry_after, origin)
    error.detail = upstream_said(content)
    return error


def _error_from_body(
    status: int, content: bytes, retry_after: float | None, origin: str
) -> UpstreamError:
    payload: Any = None
    try:
        payload = orjson.loads(content) if content else None
    except orjson.JSONDecodeError:
        payload = None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        return _error_from_fields(error, status, Failure.STATUS, retry_after)
    if isinstance(error, str):  # some servers send {"error": "message"}
        return _error_from_fields({"message": error}, status, Failure.STATUS, retry_after)
    text = content[:500].decode("utf-8", errors="replace").strip() or f"HTTP {status}"
    return _error_from_fields({"message": f"{origin}: {text}"}, status, Failure.STATUS, retry_after)


def error_from_payload(payload: JSONObject, *, in_stream: bool) -> UpstreamError | None:
    """An `{"error": ...}` object sent with a 200 or as a stream event, if `payload` is one."""
    error = payload.get("error")
    if error is None:
        return None
    fields = error if isinstance(error, dict) else {"message": str(error)}
    code = fields.get("code")
    status = code if isinstance(code, int) else 502
    failure = Failure.STREAM_BROKEN if in_stream else Failure.STATUS
    return _error_from_fields(fields, status, failure, None)


def parse_event(event: SSEEvent) -> JSONObject | str | None:
    """An event's JSON object; `DONE` at the end marker; None when it is not JSON."""
    data = event.data.strip()
    if data == DONE:
        return DONE
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


class StreamProgress:
    """What a stream has delivered of what it owes: one finish_reason per choice index
    (n per prompt), and the usage chunk when `stream_options.include_usage` asked for it."""

    def __init__(self, request: ProviderRequest) -> None:
        self.expected = request.choice_count
        options = request.body.get("stream_options")
        self.wants_usage = isinstance(options, Mapping) and options.get("include_usage") is True
        self.finished: set[int] = set()
        self.usage = False

    def saw(self, chunk: JSONObject) -> None:
        if chunk.get("usage") is not None:
            self.usage = True
        choices = chunk.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict) and choice.get("finish_reason"):
                index = choice.get("index", 0)
                self.finished.add(index if isinstance(index, int) else 0)

    def missing(self) -> str | None:
        """What has not come yet (None: the stream is whole)."""
        if len(self.finished) < self.expected:
            return f"{len(self.finished)} of {self.expected} choice(s) finished"
        if self.wants_usage and not self.usage:
            return "the usage chunk that was asked for"
        return None


class ResponsesProgress:
    """What a Responses API stream has delivered of what it owes: its final event."""

    def __init__(self) -> None:
        self.ended = False

    def saw(self, event: JSONObject) -> None:
        if event.get("type") in RESPONSE_ENDS:
            self.ended = True

    def missing(self) -> str | None:
        return None if self.ended else "the response's final event"


def error_from_event(event: JSONObject) -> UpstreamError | None:
    """A Responses stream's `error` event (`type: error`, with `code`, `message`,
    `param`), or its `response.failed` (the response's `error`), as the failure it
    reports, if `event` is one. Relayed as it came, a failed response's message (the
    backend's own words: an internal address, a key) would reach the client unmasked,
    and the deployment's breaker would count the stream a success."""
    if event.get("type") == "response.failed":
        response = event.get("response")
        error = response.get("error") if isinstance(response, dict) else None
        fields = error if isinstance(error, dict) else {"message": "the response failed"}
        return error_from_payload({"error": fields}, in_stream=True)
    if event.get("type") != "error":
        return None
    fields = {k: v for k, v in event.items() if k not in ("type", "sequence_number")}
    return error_from_payload({"error": fields}, in_stream=True)


def _error_from_fields(
    fields: Mapping[str, Any], status: int, failure: Failure, retry_after: float | None
) -> UpstreamError:
    code = fields.get("code")
    param = fields.get("param")
    return UpstreamError(
        str(fields.get("message") or f"upstream error {status}"),
        failure=failure,
        status=status if 400 <= status <= 599 else 502,
        type=str(fields.get("type") or _DEFAULT_TYPES.get(status, "server_error")),
        code=None if code is None else str(code),
        param=None if param is None else str(param),
        retry_after=retry_after,
    )
