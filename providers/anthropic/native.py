"""Anthropic's Messages API passed through (Endpoint.MESSAGES): the client's own request
sent as it came (its `model` already the deployment's, `stream` set by the call), and the
answer and events handed back as Anthropic wrote them. Nothing is translated, so
`cache_control`, thinking blocks, `top_k`, `metadata` and usage's cache counts reach each
side untouched; only errors become `UpstreamError`, as the chat path's do
(providers/anthropic/errors.py), so retries, failover, breakers and masking read them
like any backend's."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from providers.anthropic.errors import error_from_event, error_from_response
from providers.errors import UpstreamError, upstream_said
from providers.sse import SSEEvent
from providers.types import Endpoint, JSONObject

# The event that ends a whole stream: without it the stream was cut.
LAST_EVENT = "message_stop"


def native_wire(body: Mapping[str, Any], *, stream: bool) -> JSONObject:
    """The body to send: the client's, streamed only when the call is a stream."""
    wire = dict(body)
    wire.pop("stream", None)
    if stream:
        wire["stream"] = True
    return wire


def forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Of the client's headers a call carries, those Anthropic's API takes from a client
    (`anthropic-beta`); a credential or `anthropic-version` never replaces the provider's."""
    wanted = Endpoint.MESSAGES.client_headers
    return {k.lower(): v for k, v in headers.items() if k.lower() in wanted}


def native_answer(name: str, body: Any) -> JSONObject:
    """A whole answer, as Anthropic sent it: a `message` object with a list `content`. An
    error body on a 200 is the upstream's error; anything else is a protocol error (its
    body kept for the log, never shown to the client as it came)."""
    if isinstance(body, dict) and body.get("type") == "error":
        raise error_from_response(502, orjson.dumps(body), None, name)
    if (
        not isinstance(body, dict)
        or body.get("type") != "message"
        or not isinstance(body.get("content"), list)
    ):
        error = UpstreamError.protocol(f"{name}: response is not a Messages API `message`")
        error.detail = upstream_said(orjson.dumps(body))
        raise error
    return body


def event_object(name: str, event: SSEEvent) -> JSONObject:
    """A stream event's data as a JSON object; anything else breaks the stream (skipped, it
    may have carried text and could pass a cut answer off as whole)."""
    try:
        data: Any = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise UpstreamError.stream_broken(f"{name}: malformed stream event")
    return data


def native_event(name: str, event: SSEEvent) -> JSONObject:
    """One stream event as Anthropic sent it, a dict with its `type` (taken from the event's
    name where the data lacks it). An `error` event raises the upstream's error; an event
    that is not a JSON object breaks the stream (skipped, it could hide a cut answer)."""
    data = event_object(name, event)
    if not isinstance(data.get("type"), str):
        if event.event == "message":  # unnamed, and the data does not say what it is
            raise UpstreamError.stream_broken(f"{name}: stream event without a `type`")
        data["type"] = event.event
    if data["type"] == "error":
        raise error_from_event(data)
    return data
