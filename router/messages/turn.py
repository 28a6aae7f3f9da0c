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

from providers.errors import UpstreamError
from providers.types import JSONObject
from router.accounting import DROPPED
from router.endpoints import Framer
from router.errors import stream_error_payload
from router.gateway import Gateway
from router.header_values import header_list
from router.messages.events import MessageEvents, sse
from router.messages.from_chat import error_body, message_object
from router.messages.to_chat import chat_request
from router.pipeline import PipelineRun
from router.responses.ids import new_id
from router.routing_options import ROUTING_FIELDS, drops_what_chat_lacks
from router.sse import StreamEnd, generated_chars

log = structlog.get_logger("turnout.messages")


@dataclass(slots=True)
class MessageTurn:
    request: dict[str, Any]
    chat: dict[str, Any]
    native: Any = None  # the body as sent, for Anthropic deployments (pass-through)
    id: str = field(default_factory=lambda: new_id("msg"))

    @classmethod
    def begin(
        cls, gateway: Gateway, run: PipelineRun, body: dict[str, Any], headers: Mapping[str, str]
    ) -> MessageTurn:
        caller = run.record.caller
        assert caller is not None  # admitted first
        chat, dropped = chat_request(body, drop=drops_what_chat_lacks(gateway.config, caller, body))
        chat.update({k: body[k] for k in ROUTING_FIELDS if k in body})
        if dropped:  # said as chat's own drops are
            run.record.extra_headers[DROPPED] = header_list(dropped)
        return cls(body, chat)

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
            return dict(answer)
        return message_object(self.id, answer, model=self.model, stop_sequences=self.stops)

    def framer(self) -> Framer:
        events = MessageEvents(self.id, model=self.model, stop_sequences=self.stops)
        return lambda chunks, on_end, _usage: _frames(events, chunks, on_end)


async def _frames(
    events: MessageEvents, chunks: AsyncIterator[JSONObject], on_end: StreamEnd
) -> AsyncIterator[bytes]:
    """The chat stream as Anthropic's events; a failure after the first event is an
    `error` event, never a silent end (Anthropic's SDK raises it)."""
    outcome, usage, streamed = "client_closed", None, 0
    try:
        for event in events.start():
            yield sse(event)
        async for chunk in chunks:
            if chunk.get("usage"):
                usage = chunk["usage"]
            streamed += generated_chars(chunk)
            for event in events.on_chunk(chunk):
                yield sse(event)
        for event in events.finish():
            yield sse(event)
        outcome = "ok"
    except UpstreamError as exc:
        outcome = "error"
        for event in events.fail(stream_error_payload(exc)["error"]):
            yield sse(event)
    except Exception as exc:  # a bug mid-stream: the client still gets an `error` event
        outcome = "error"
        log.error("messages_stream_failed", exc_info=exc)
        failed = {"type": "api_error", "message": "Internal server error"}
        for event in events.fail(failed):
            yield sse(event)
    finally:
        on_end(outcome, usage, streamed)


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
