"""`kind: anthropic`: request builder → call → translate back, for Anthropic's Messages API."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import orjson
import structlog

from providers.anthropic.errors import error_from_response
from providers.anthropic.native import (
    LAST_EVENT,
    event_object,
    forwarded_headers,
    native_answer,
    native_event,
    native_wire,
)
from providers.anthropic.settings import AnthropicSettings
from providers.anthropic.stream import StreamTranslator
from providers.anthropic.wire import ACCEPTED_KEYS, from_wire, to_wire
from providers.capabilities import UNLIMITED_STOP, Capabilities
from providers.errors import Failure, UpstreamError
from providers.http_adapter import HTTPProvider
from providers.sse import SSEEvent
from providers.timeouts import UpstreamTimeouts
from providers.types import Endpoint, JSONObject, ProviderRequest, ProviderResponse

# The Messages API: chat only, one candidate, no logprobs, bias, seed or penalties,
# temperature up to 1, any number of stop sequences but no whitespace-only ones, no
# JSON-schema output, none of OpenAI's newer chat options (reasoning effort, audio, web
# search, prompt caching, custom tools, ...; `store` and `service_tier` have no effect there
# and are dropped, reported, rather than ignored), and only the body keys `to_wire`
# translates.
ANTHROPIC_CAPABILITIES = Capabilities(
    completions=False,
    embeddings=False,
    max_n=1,
    best_of=False,
    echo=False,
    suffix=False,
    max_logprobs=-1,
    max_top_logprobs=-1,
    logit_bias=False,
    seed=False,
    max_stop=UNLIMITED_STOP,
    whitespace_stop=False,
    max_temperature=1.0,
    penalties=False,
    response_format=False,
    request_keys=ACCEPTED_KEYS,
).without_chat_options()

log = structlog.get_logger("turnout.providers.anthropic")
# What Anthropic's count_tokens takes of a Messages request (it refuses `max_tokens`).
_COUNTED = frozenset(
    {"model", "messages", "system", "tools", "tool_choice", "thinking", "mcp_servers"}
)


class AnthropicProvider(HTTPProvider):
    def __init__(self, name: str, settings: AnthropicSettings, timeouts: UpstreamTimeouts) -> None:
        headers = {"anthropic-version": settings.anthropic_version, **settings.headers}
        if settings.api_key:
            headers["x-api-key"] = settings.api_key
        super().__init__(
            name,
            timeouts=settings.timeouts or timeouts,
            max_connections=settings.max_connections,
            max_response_bytes=settings.max_response_bytes,
            max_event_bytes=settings.max_event_bytes,
            headers=headers,
            parse_error=error_from_response,
            check_url=settings.base_url + _check_path(settings),
        )
        self._settings = settings
        self._url = f"{settings.base_url}/v1/messages"

    @property
    def endpoints(self) -> frozenset[Endpoint]:
        # MESSAGES: the Messages door's request as the client sent it (anthropic/native.py).
        return frozenset({Endpoint.CHAT, Endpoint.MESSAGES})

    @property
    def capabilities(self) -> Capabilities:
        return ANTHROPIC_CAPABILITIES

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        if request.endpoint is Endpoint.MESSAGES:
            return await self._native_complete(request)
        wire = self._wire(request, stream=False)
        body = await self.post_json(self._url, orjson.dumps(wire), request.timeouts)
        if not isinstance(body, dict):
            raise UpstreamError.protocol(f"{self.name}: response is not a JSON object")
        if body.get("type") == "error":
            raise error_from_response(502, orjson.dumps(body), None, self.name)
        return ProviderResponse(body=from_wire(body, str(wire["model"])))

    def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        if request.endpoint is Endpoint.MESSAGES:
            return self._native_stream(request)
        return self._chat_stream(request)

    async def count_message_tokens(
        self, body: Mapping[str, Any], headers: Mapping[str, str]
    ) -> int | None:
        """Anthropic's own count (`POST /v1/messages/count_tokens`) of the request as sent."""
        wire = {k: v for k, v in native_wire(body, stream=False).items() if k in _COUNTED}
        answer = await self.post_json(
            f"{self._url}/count_tokens", orjson.dumps(wire), None, forwarded_headers(headers)
        )
        counted = answer.get("input_tokens") if isinstance(answer, dict) else None
        if not isinstance(counted, int):
            raise UpstreamError.protocol(f"{self.name}: count_tokens answered no input_tokens")
        return counted

    async def _native_complete(self, request: ProviderRequest) -> ProviderResponse:
        """Anthropic's `message`, untranslated."""
        wire = native_wire(request.body, stream=False)
        headers = forwarded_headers(request.headers)
        body = await self.post_json(self._url, orjson.dumps(wire), request.timeouts, headers)
        return ProviderResponse(body=native_answer(self.name, body))

    async def _native_stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        """Anthropic's events as they come (`error` raised), up to `message_stop`."""
        wire = native_wire(request.body, stream=True)
        headers = forwarded_headers(request.headers)
        events = self.post_events(self._url, orjson.dumps(wire), request.timeouts, headers)
        async with contextlib.aclosing(events):
            async for event in events:
                data = native_event(self.name, event)
                yield data
                if data["type"] == LAST_EVENT:
                    return
        raise UpstreamError.stream_broken(f"{self.name}: stream ended without message_stop")

    async def _chat_stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        wire = self._wire(request, stream=True)
        options = request.body.get("stream_options") or {}
        translator = StreamTranslator(
            str(wire["model"]), include_usage=bool(options.get("include_usage"))
        )
        events = self.post_events(self._url, orjson.dumps(wire), request.timeouts)
        async with contextlib.aclosing(events):
            async for event in events:
                for chunk in self._translate(translator, event):
                    yield chunk
                if translator.finished:
                    return
        raise UpstreamError.stream_broken(f"{self.name}: stream ended without message_stop")

    def _wire(self, request: ProviderRequest, *, stream: bool) -> JSONObject:
        if request.endpoint is not Endpoint.CHAT:
            raise UpstreamError(
                f"{self.name}: Anthropic deployments serve chat completions and Anthropic's "
                f"Messages API only, not {request.endpoint.value}",
                failure=Failure.STATUS,
                status=400,
                type="invalid_request_error",
                param="model",
            )
        wire, clamped = to_wire(request.body, default_max_tokens=self._settings.default_max_tokens)
        if clamped:
            log.info("options_clamped", provider=self.name, options=clamped)
        wire.pop("stream", None)
        if stream:
            wire["stream"] = True
        return wire

    def _translate(self, translator: StreamTranslator, event: SSEEvent) -> list[JSONObject]:
        return translator.feed(event.event, event_object(self.name, event))


def _check_path(settings: AnthropicSettings) -> str:
    """`GET /v1/models` (Models API): authenticated like Messages, and costs no tokens."""
    check = settings.health_check
    return check.path if check is not None and check.path else "/v1/models"
