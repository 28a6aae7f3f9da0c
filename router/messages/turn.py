"""One Messages request through the Anthropic-shaped door: its chat form (and, for
Anthropic deployments, the body as the client sent it), how its answer is mapped back
(whole, or as Anthropic's events) and how errors are put in Anthropic's envelope."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson
import structlog
from litestar import Response

from policies.errors import ApiError
from policies.native import NativeRequest
from policies.translation import Refusal
from providers.errors import UpstreamError
from providers.types import Endpoint, JSONObject
from router.accounting import DROPPED
from router.endpoints import Framer
from router.errors import stream_error_payload
from router.gateway import Gateway
from router.header_values import header_list
from router.messages.events import MessageEvents, sse
from router.messages.from_chat import error_body, message_object, new_message_id, stream_error
from router.messages.to_chat import chat_request
from router.pipeline import PipelineRun
from router.routing_options import ROUTING_FIELDS, drops_what_chat_lacks
from router.sse import StreamEnd, generated_chars

log = structlog.get_logger("turnout.messages")
# Turnout's own request fields: never sent to an Anthropic deployment.
TURNOUT_FIELDS = frozenset({"router", "fallbacks", "cache"})


@dataclass(slots=True)
class MessageTurn:
    request: dict[str, Any]
    chat: dict[str, Any]
    native: NativeRequest  # the body as sent: Anthropic deployments get it (pass-through)
    # Why `chat` falls short of the request (it had to drop what chat has no form for,
    # e.g. a server tool): then only an Anthropic deployment may answer it.
    refusal: ApiError | None = None
    id: str = field(default_factory=new_message_id)

    @classmethod
    def begin(
        cls, gateway: Gateway, run: PipelineRun, body: dict[str, Any], headers: Mapping[str, str]
    ) -> MessageTurn:
        caller = run.record.caller
        assert caller is not None  # admitted first
        drop, refusal = drops_what_chat_lacks(gateway.config, caller, body), None
        try:
            chat, dropped = chat_request(body, drop=drop)
        except ApiError as exc:
            if drop:
                raise
            (chat, _), dropped, refusal = chat_request(body, drop=True), [], exc
        chat.update({k: body[k] for k in ROUTING_FIELDS if k in body})
        if dropped:  # said as chat's own drops are
            run.record.extra_headers[DROPPED] = header_list(dropped)
        sent = {k: v for k, v in body.items() if k not in TURNOUT_FIELDS}
        native = NativeRequest.of(Endpoint.MESSAGES, sent, headers)
        return cls(body, chat, native, refusal)

    def chat_refusal(self) -> Refusal | None:
        """What a deployment without the Messages API is skipped with (None: it takes the
        chat form)."""
        if self.refusal is None:
            return None
        return Refusal(self.refusal.param or "messages", self.refusal.message)

    def check_routable(self, gateway: Gateway, run: PipelineRun) -> None:
        """The chat form's refusal, when no deployment of the plan takes the body as sent:
        refused as a chat-only model refuses it, before any call."""
        route = run.record.route
        if self.refusal is not None and (
            route is None or not gateway.dispatcher.answers_natively(route.plan, Endpoint.MESSAGES)
        ):
            raise self.refusal

    def cache_options(self) -> Any:
        """A request whose chat form falls short of it is never answered from the cache
        (the key is the chat form)."""
        return {"no_cache": True} if self.refusal is not None else self.request.get("cache")

    @property
    def model(self) -> str:
        """The model the client asked for: an Anthropic client expects it back."""
        return str(self.request.get("model"))

    @property
    def stops(self) -> list[str]:
        """The request's stop sequences: a stop that matched one says so (`stop_sequence`)."""
        stops = self.request.get("stop_sequences")
        return [s for s in stops if isinstance(s, str)] if isinstance(stops, list) else []

    def whole(self, answer: JSONObject) -> dict[str, Any]:
        if answer.get("type") == "message":  # an Anthropic deployment's own, passed through
            return {**answer, "model": self.model}
        return message_object(self.id, answer, model=self.model, stop_sequences=self.stops)

    def framer(self) -> Framer:
        events = MessageEvents(self.id, model=self.model, stop_sequences=self.stops)
        return lambda chunks, on_end, _usage: _frames(events, self.model, chunks, on_end)


async def _frames(
    events: MessageEvents, model: str, chunks: AsyncIterator[JSONObject], on_end: StreamEnd
) -> AsyncIterator[bytes]:
    """The stream as Anthropic's events: a chat stream mapped (`MessageEvents`), an
    Anthropic deployment's relayed event by event, as its first chunk says; a failure after
    the first event is an `error` event, never a silent end (Anthropic's SDK raises it)."""
    outcome, usage, streamed = "client_closed", None, 0
    native: _NativeUsage | None = None
    started = False
    try:
        async for chunk in chunks:
            if not started:  # the first chunk says which shape the stream is in
                started = True
                if chunk.get("type") == "message_start":
                    native = _NativeUsage()
                else:
                    for event in events.start():
                        yield sse(event)
            if native is not None:
                native.see(chunk)
                yield sse(_named(chunk, model))
                continue
            if chunk.get("usage"):
                usage = chunk["usage"]
            streamed += generated_chars(chunk)
            for event in events.on_chunk(chunk):
                yield sse(event)
        if native is None:
            for event in events.finish():
                yield sse(event)
        outcome = "ok"
    except UpstreamError as exc:
        outcome = "error"
        yield sse(stream_error(stream_error_payload(exc)))
    except Exception as exc:  # a bug mid-stream: the client still gets an `error` event
        outcome = "error"
        log.error("messages_stream_failed", exc_info=exc)
        yield sse(stream_error({"type": "server_error", "message": "Internal server error"}))
    finally:
        if native is not None:
            usage, streamed = native.usage(), native.chars
        on_end(outcome, usage, streamed)


@dataclass(slots=True)
class _NativeUsage:
    """An Anthropic stream's usage, for settling the limits: `message_start`'s input and
    cache counts, then `message_delta`'s (cumulative) output tokens."""

    counts: dict[str, int] = field(default_factory=dict)
    chars: int = 0

    def see(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        found: Any = None
        if kind == "message_start":
            found = (event.get("message") or {}).get("usage")
        elif kind == "message_delta":
            found = event.get("usage")
        elif kind == "content_block_delta":
            delta = event.get("delta") or {}
            self.chars += sum(
                len(v) for k, v in delta.items() if k != "type" and isinstance(v, str)
            )
        if isinstance(found, Mapping):
            self.counts.update({k: v for k, v in found.items() if isinstance(v, int)})

    def usage(self) -> dict[str, int] | None:
        if not self.counts:
            return None
        prompt = sum(
            self.counts.get(k, 0)
            for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
        )
        completion = self.counts.get("output_tokens", 0)
        return {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            # Counted in /metrics as cached prompt tokens (turnout_prompt_cached_tokens).
            "cache_read_input_tokens": self.counts.get("cache_read_input_tokens", 0),
        }


def _named(event: Mapping[str, Any], model: str) -> Mapping[str, Any]:
    """An Anthropic deployment's event as the client gets it: `message_start` names the
    model the client asked for (an Anthropic client expects its own name back)."""
    if event.get("type") == "message_start" and isinstance(event.get("message"), Mapping):
        return {**event, "message": {**event["message"], "model": model}}
    return event


def anthropic_error(status: int, openai_body: bytes, headers: Mapping[str, str]) -> Response[Any]:
    """An error answer in Anthropic's envelope and status, from the pipeline's (OpenAI's)."""
    message = "Internal server error"
    if openai_body:
        with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError):
            message = str(orjson.loads(openai_body)["error"]["message"])
    status, body = error_body(status, message)
    return Response(
        orjson.dumps(body), status_code=status, media_type="application/json", headers=headers
    )
