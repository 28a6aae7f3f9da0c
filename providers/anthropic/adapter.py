"""`kind: anthropic`: request builder → call → translate back, for Anthropic's Messages API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import structlog

from providers.anthropic.errors import error_from_response
from providers.anthropic.settings import AnthropicSettings
from providers.anthropic.stream import StreamTranslator
from providers.anthropic.wire import from_wire, to_wire
from providers.base import Provider
from providers.capabilities import UNLIMITED_STOP, Capabilities
from providers.errors import Failure, UpstreamError
from providers.http import (
    iter_body,
    mapped_transport_errors,
    open_session,
    parse_retry_after,
    read_body,
)
from providers.sse import SSEDecoder, SSEEvent
from providers.timeouts import UpstreamTimeouts
from providers.types import Endpoint, JSONObject, ProviderRequest, ProviderResponse

# The Messages API: chat only, one candidate, no logprobs, bias, seed or penalties,
# temperature up to 1, any number of stop sequences, no JSON-schema output.
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
    max_temperature=1.0,
    penalties=False,
    response_format=False,
)

log = structlog.get_logger("turnout.providers.anthropic")


class AnthropicProvider(Provider):
    def __init__(self, name: str, settings: AnthropicSettings, timeouts: UpstreamTimeouts) -> None:
        super().__init__(name)
        self._settings = settings
        self._timeouts = settings.timeouts or timeouts
        self._url = f"{settings.base_url}/v1/messages"
        self._headers = {
            "content-type": "application/json",
            "anthropic-version": settings.anthropic_version,
            **settings.headers,
        }
        if settings.api_key:
            self._headers["x-api-key"] = settings.api_key
        self._session: aiohttp.ClientSession | None = None

    @property
    def endpoints(self) -> frozenset[Endpoint]:
        return frozenset({Endpoint.CHAT})

    @property
    def capabilities(self) -> Capabilities:
        return ANTHROPIC_CAPABILITIES

    async def start(self) -> None:
        if self._session is None:
            self._session = open_session(self._timeouts, self._settings.max_connections)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        wire = self._wire(request, stream=False)
        async with self._post(wire) as response:
            with mapped_transport_errors(self.name, started=True):
                content = await read_body(response, self._timeouts.stream_idle)
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError.protocol(f"{self.name}: response is not JSON") from exc
        if not isinstance(body, dict) or body.get("type") == "error":
            if isinstance(body, dict):
                raise error_from_response(502, content, None, self.name)
            raise UpstreamError.protocol(f"{self.name}: response is not a JSON object")
        return ProviderResponse(body=from_wire(body, str(wire["model"])))

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        wire = self._wire(request, stream=True)
        options = request.body.get("stream_options") or {}
        translator = StreamTranslator(
            str(wire["model"]), include_usage=bool(options.get("include_usage"))
        )
        decoder = SSEDecoder()
        async with self._post(wire) as response:
            with mapped_transport_errors(self.name, started=True):
                async for raw in iter_body(response, self._timeouts.stream_idle):
                    for event in decoder.feed(raw):
                        for chunk in self._translate(translator, event):
                            yield chunk
                        if translator.finished:
                            return
        for event in decoder.close():
            for chunk in self._translate(translator, event):
                yield chunk
        if not translator.finished:
            raise UpstreamError.stream_broken(f"{self.name}: stream ended without message_stop")

    def _wire(self, request: ProviderRequest, *, stream: bool) -> JSONObject:
        if request.endpoint is not Endpoint.CHAT:
            raise UpstreamError(
                f"{self.name}: Anthropic deployments serve chat completions only, "
                f"not {request.endpoint.value}",
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
        try:
            data: Any = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            data = None
        if not isinstance(data, dict):
            log.warning("malformed_stream_event", provider=self.name, data=event.data[:200])
            return []
        return translator.feed(event.event, data)

    @asynccontextmanager
    async def _post(self, wire: JSONObject) -> AsyncIterator[aiohttp.ClientResponse]:
        if self._session is None:
            raise UpstreamError(
                f"{self.name}: not started yet",
                failure=Failure.CONNECT,
                status=503,
                type="service_unavailable",
            )
        with mapped_transport_errors(self.name):
            async with asyncio.timeout(self._timeouts.first_byte):
                response = await self._session.post(
                    self._url, data=orjson.dumps(wire), headers=self._headers
                )
        try:
            if response.status >= 400:
                with mapped_transport_errors(self.name, started=True):
                    content = await read_body(response, self._timeouts.stream_idle)
                retry_after = parse_retry_after(response.headers)
                raise error_from_response(response.status, content, retry_after, self.name)
            yield response
        finally:
            response.release()
