"""The Responses door's side of native passthrough (policies/native.py): the request a
deployment declaring `responses` gets, and its answer as the client gets it.

- `native_request`: the client's Responses body with the conversation's earlier items
  (from `previous_response_id`) expanded into `input`, `store: false` (Turnout keeps the
  conversation; the upstream need not), and without Turnout's own fields.
- `own_response`: an upstream Response made Turnout's: its `id`, `created_at`,
  `previous_response_id` and `store` are the turn's; everything else is as it came.
- `NativeEvents`: an upstream Responses stream relayed event by event, each response in
  it made Turnout's and every `sequence_number` renumbered in Turnout's own sequence; the
  final event (`response.completed`, `response.incomplete`, `response.failed`) is held
  back until `finish`, so that the turn is stored before the client sees it. It has the
  interface of `router/responses/events.ResponseEvents`, which the door uses for chat
  streams.

Pure: no I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from router.responses.from_chat import response_error
from router.sse import generated_chars

Event = dict[str, Any]
# Turnout's own fields of a Responses body (routing and caching), never sent upstream.
OWN_FIELDS = frozenset({"router", "fallbacks", "cache", "previous_response_id"})
FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
# Deltas of generated text in a Responses stream (what a cut stream is estimated on).
_DELTAS = frozenset(
    {
        "response.output_text.delta",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_text.delta",
    }
)


def native_request(
    request: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    items: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The body a deployment declaring `responses` gets: `request` as the client sent it,
    `input` being the earlier turns' items (`history`) and this turn's (`items`)."""
    body = {k: v for k, v in request.items() if k not in OWN_FIELDS}
    body["input"] = [_sendable(item) for item in (*history, *items)]
    body["store"] = False
    return body


def _sendable(item: Mapping[str, Any]) -> dict[str, Any]:
    """An item as the Responses API takes it as input: an input message has no `id` (the
    door gives every stored item one; only output messages carry theirs)."""
    sent = dict(item)
    if sent.get("type") == "message" and sent.get("role") != "assistant":
        sent.pop("id", None)
    return sent


def own_response(response: Mapping[str, Any], own: Mapping[str, Any]) -> dict[str, Any]:
    """The upstream's Response with the turn's own fields (`own`) put in."""
    return {**response, **own}


def is_response_event(chunk: Mapping[str, Any]) -> bool:
    """Whether a relayed chunk is a Responses stream event (a chat chunk has no `type`)."""
    kind = chunk.get("type")
    return isinstance(kind, str) and kind.startswith("response.")


def chunk_usage(chunk: Mapping[str, Any]) -> dict[str, Any] | None:
    """The usage a chunk reports, in chat's terms (what limits settle on): a chat chunk's
    `usage`, or a final Responses event's `response.usage` mapped."""
    usage = chunk.get("usage")
    if isinstance(usage, dict) and usage:
        return usage
    response = chunk.get("response")
    usage = response.get("usage") if isinstance(response, Mapping) else None
    if not isinstance(usage, Mapping) or chunk.get("type") not in FINAL_EVENTS:
        return None
    return chat_usage(usage)


def chat_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """A Responses `usage` in chat's terms."""
    mapped = {
        "prompt_tokens": usage.get("input_tokens"),
        "completion_tokens": usage.get("output_tokens"),
        "total_tokens": usage.get("total_tokens"),
    }
    return {k: v for k, v in mapped.items() if isinstance(v, int)}


def chunk_chars(chunk: Mapping[str, Any]) -> int:
    """Characters of generated text a chat chunk or a Responses event carries."""
    if chunk.get("type") in _DELTAS:
        delta = chunk.get("delta")
        return len(delta) if isinstance(delta, str) else 0
    return generated_chars(chunk)


class NativeEvents:
    """One upstream Responses stream as the client gets it (module docstring)."""

    def __init__(self, skeleton: Mapping[str, Any], own: Mapping[str, Any]) -> None:
        """`skeleton`: the turn's Response before any output (what a failure before the
        upstream said anything reports); `own`: the turn's fields (`own_response`)."""
        self._response = dict(skeleton)
        self._own = dict(own)
        self._sequence = 0
        self._held: Event | None = None  # the final event, until `finish`
        self._ended = False

    @property
    def response(self) -> dict[str, Any]:
        """The Response as it stands (the final one once the final event came)."""
        return copy.deepcopy(self._response)

    def start(self) -> list[Event]:
        return []  # the upstream's own `response.created` comes first

    def on_chunk(self, chunk: Mapping[str, Any]) -> list[Event]:
        if self._ended or self._held is not None:
            return []  # nothing follows a final event
        event = dict(chunk)
        response = event.get("response")
        if isinstance(response, Mapping):
            self._response = own_response(response, self._own)
            event["response"] = self.response
        if event.get("type") in FINAL_EVENTS:
            self._held = event
            return []
        return [self._numbered(event)]

    def finish(self, *, completed_at: int | None = None) -> list[Event]:
        """The final event (a stream reaches its end only after one: the adapter says a
        stream without it is cut)."""
        del completed_at  # the upstream's response says when it completed
        if self._ended:
            return []
        self._ended = True
        held, self._held = self._held, None
        return [] if held is None else [self._numbered(held)]

    def fail(self, error: Mapping[str, Any]) -> list[Event]:
        """`response.failed` (`error`: an OpenAI error envelope, or its `error` object)."""
        if self._ended:
            return []
        self._ended, self._held = True, None
        self._response.update(status="failed", error=response_error(error))
        return [self._numbered({"type": "response.failed", "response": self.response})]

    def _numbered(self, event: Event) -> Event:
        event["sequence_number"] = self._sequence
        self._sequence += 1
        return event
