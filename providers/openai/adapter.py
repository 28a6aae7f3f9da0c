"""`kind: openai`: request builder → call → translate back, for OpenAI-compatible APIs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import orjson
import structlog

from providers.base import Provider
from providers.errors import Failure, UpstreamError
from providers.http import (
    iter_body,
    mapped_transport_errors,
    open_session,
    parse_retry_after,
    read_body,
)
from providers.openai.settings import OpenAISettings
from providers.openai.wire import (
    DONE,
    error_from_payload,
    error_from_response,
    parse_event,
    to_wire,
)
from providers.sse import SSEDecoder
from providers.timeouts import UpstreamTimeouts
from providers.types import Endpoint, JSONObject, ProviderRequest, ProviderResponse

log = structlog.get_logger("turnout.providers.openai")


class OpenAIProvider(Provider):
    def __init__(self, name: str, settings: OpenAISettings, timeouts: UpstreamTimeouts) -> None:
        super().__init__(name)
        self._settings = settings
        self._timeouts = settings.timeouts or timeouts
        self._headers = {"content-type": "application/json", **settings.headers}
        if settings.api_key:
            self._headers["authorization"] = f"Bearer {settings.api_key}"
        self._session: aiohttp.ClientSession | None = None

    @property
    def endpoints(self) -> frozenset[Endpoint]:
        return frozenset(Endpoint)

    async def start(self) -> None:
        if self._session is None:
            self._session = open_session(self._timeouts, self._settings.max_connections)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        async with self._post(request) as response:
            with mapped_transport_errors(self.name, started=True):
                content = await read_body(response, self._timeouts.stream_idle)
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError.protocol(f"{self.name}: response is not JSON") from exc
        if not isinstance(body, dict):
            raise UpstreamError.protocol(f"{self.name}: response is not a JSON object")
        error = error_from_payload(body, in_stream=False)
        if error is not None:
            raise error
        return ProviderResponse(body=body)

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        decoder = SSEDecoder()
        finished = False
        async with self._post(request) as response:
            with mapped_transport_errors(self.name, started=True):
                async for raw in iter_body(response, self._timeouts.stream_idle):
                    for event in decoder.feed(raw):
                        chunk = self._chunk(parse_event(event), event.data)
                        if chunk is DONE:
                            return
                        if isinstance(chunk, dict):
                            finished = finished or _has_finish_reason(chunk)
                            yield chunk
        for event in decoder.close():
            chunk = self._chunk(parse_event(event), event.data)
            if isinstance(chunk, dict):
                finished = finished or _has_finish_reason(chunk)
                yield chunk
        if not finished:
            raise UpstreamError.stream_broken(
                f"{self.name}: stream ended without [DONE] before any choice finished"
            )

    def _chunk(self, parsed: JSONObject | str | None, data: str) -> JSONObject | str | None:
        if parsed is None:
            log.warning("malformed_stream_event", provider=self.name, data=data[:200])
            return None
        if isinstance(parsed, dict):
            error = error_from_payload(parsed, in_stream=True)
            if error is not None:
                raise error
        return parsed

    @asynccontextmanager
    async def _post(self, request: ProviderRequest) -> AsyncIterator[aiohttp.ClientResponse]:
        if self._session is None:
            raise UpstreamError(
                f"{self.name}: not started yet",
                failure=Failure.CONNECT,
                status=503,
                type="service_unavailable",
            )
        url = self._settings.base_url + request.endpoint.path
        with mapped_transport_errors(self.name):
            async with asyncio.timeout(self._timeouts.first_byte):
                response = await self._session.post(
                    url, data=to_wire(request.body), headers=self._headers
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


def _has_finish_reason(chunk: JSONObject) -> bool:
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return False
    return any(isinstance(c, dict) and c.get("finish_reason") for c in choices)
