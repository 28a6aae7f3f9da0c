"""The skeleton every HTTP backend adapter shares: a pooled session opened and closed with
the app; a request under the first-byte timeout whose error statuses become `UpstreamError`
through the adapter's own parser; and the answer as one JSON value or as SSE events.

At most `max_connections` calls are in flight to one provider; a call past it waits for
one to end. That wait is Turnout's own, not the backend's: it has no timeout of its own
(the request's deadline, the dispatcher's, bounds it), the first-byte timeout starts only
once the call has its connection, and nothing about it reaches a breaker. A stream holds
its connection until it ends, so the cap is counted in open streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson

from providers.base import Provider
from providers.errors import UpstreamError
from providers.http import (
    BodyTooLarge,
    compact,
    iter_body,
    mapped_transport_errors,
    open_session,
    parse_retry_after,
    read_body,
    read_error_body,
)
from providers.sse import EventTooLarge, SSEDecoder, SSEEvent
from providers.startup import StartGate
from providers.timeouts import TimeoutOverrides, UpstreamTimeouts
from providers.trace_headers import with_trace_context

# (status, body, retry-after seconds, provider name) → the backend's error, in our terms.
ErrorParser = Callable[[int, bytes, float | None, str], UpstreamError]


class HTTPProvider(Provider):
    def __init__(
        self,
        name: str,
        *,
        timeouts: UpstreamTimeouts,
        max_connections: int,
        max_response_bytes: int,
        max_event_bytes: int,
        headers: dict[str, str],
        parse_error: ErrorParser,
        check_url: str,
    ) -> None:
        """`check_url`: what `check` GETs (the backend's model list, unless configured).
        `max_response_bytes`, `max_event_bytes`: the most one answer, one SSE event, may
        hold in memory (providers.http_settings)."""
        super().__init__(name)
        self._timeouts = timeouts
        self._max_response_bytes = max_response_bytes
        self._max_event_bytes = max_event_bytes
        self._get_headers = dict(headers)
        self._headers = {"content-type": "application/json", **headers}
        self._parse_error = parse_error
        self._check_url = check_url
        self._session: aiohttp.ClientSession | None = None
        self._started = StartGate(name)
        # One slot per connection in use; aiohttp's own pool is unbounded (see open_session).
        self._slots = asyncio.Semaphore(max_connections)

    async def start(self) -> None:
        await self._started.run(self._open())

    async def _open(self) -> None:
        if self._session is None:
            self._session = open_session(self._timeouts)

    async def aclose(self) -> None:
        self._started.close()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def check(self) -> None:
        """Healthy when `GET check_url` answers 2xx with a JSON object; an error status
        becomes `UpstreamError` through the adapter's parser, like a failed call's. Not
        started: unhealthy at once (a check does not wait for the start, as calls do)."""
        if self._session is None:
            raise UpstreamError.unavailable(f"{self.name}: not started yet")
        body = await self.get_json(self._check_url)
        if not isinstance(body, dict):
            raise UpstreamError.protocol(f"{self.name}: health check answer is not a JSON object")

    async def post_json(
        self,
        url: str,
        body: bytes,
        timeouts: TimeoutOverrides | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """The whole answer, parsed; a body that is not JSON is a protocol error.
        `timeouts`: the call's own (a model's), over the provider's; `headers`: the call's
        own, over the provider's."""
        return await self._json("POST", url, compact(body), self._limits(timeouts), headers)

    async def get_json(self, url: str) -> Any:
        return await self._json("GET", url, None, self._timeouts, None)

    async def _json(
        self,
        method: str,
        url: str,
        body: bytes | None,
        limits: UpstreamTimeouts,
        extra: Mapping[str, str] | None,
    ) -> Any:
        """`_request` written out for a whole answer (every non-streamed call): the same
        steps, without a generator-based context manager around them."""
        await self._started.wait()
        async with self._slots:
            response = await self._send(method, url, body, limits, extra)
            try:
                with mapped_transport_errors(self.name, started=True):
                    content = await read_body(
                        response, limits.stream_idle, self._max_response_bytes
                    )
            except BodyTooLarge as exc:
                raise UpstreamError.protocol(f"{self.name}: {exc} (max_response_bytes)") from None
            finally:
                response.release()
        try:
            return orjson.loads(content)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError.protocol(f"{self.name}: response is not JSON") from exc

    async def post_events(
        self,
        url: str,
        body: bytes,
        timeouts: TimeoutOverrides | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncGenerator[SSEEvent, None]:
        """SSE events as they arrive (an unterminated last event included when the body ends
        cleanly). Close the generator to release the connection at once. `timeouts`: the
        call's own (a model's), over the provider's; `headers`: the call's own, over the
        provider's."""
        decoder = SSEDecoder(self._max_event_bytes)
        limits = self._limits(timeouts)
        body = compact(body)  # held until the stream ends
        async with self._request("POST", url, body, limits, headers) as response:
            with mapped_transport_errors(self.name, started=True):
                async for raw in iter_body(response, limits.stream_idle):
                    try:
                        events = decoder.feed(raw)
                    except EventTooLarge as exc:
                        # Continued like any broken stream; released unread, the
                        # connection is closed.
                        for event in exc.events:
                            yield event
                        raise UpstreamError.stream_broken(
                            f"{self.name}: {exc} (max_event_bytes)"
                        ) from None
                    for event in events:
                        yield event
        for event in decoder.close():
            yield event

    def _limits(self, timeouts: TimeoutOverrides | None) -> UpstreamTimeouts:
        return self._timeouts if timeouts is None else timeouts.applied_to(self._timeouts)

    @asynccontextmanager
    async def _request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        limits: UpstreamTimeouts | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        limits = limits or self._timeouts
        await self._started.wait()  # a call made while the app starts waits for the session
        async with self._slots:  # a free connection: waited for with no timeout of ours
            response = await self._send(method, url, body, limits, extra)
            try:
                yield response
            finally:
                response.release()

    async def _send(
        self,
        method: str,
        url: str,
        body: bytes | None,
        limits: UpstreamTimeouts,
        extra: Mapping[str, str] | None,
    ) -> aiohttp.ClientResponse:
        """The call, once it holds a slot: its response under the first-byte timeout, or
        the backend's error status as `UpstreamError` (that response released)."""
        # The session's connect timeout is the provider's; a call with its own passes it.
        own: dict[str, Any] = {}
        if limits.connect != self._timeouts.connect:
            own["timeout"] = aiohttp.ClientTimeout(total=None, sock_connect=limits.connect)
        session = self._session
        if session is None:  # closed while this call waited
            raise UpstreamError.own_limit(f"{self.name}: closed")
        with mapped_transport_errors(self.name):
            async with asyncio.timeout(limits.first_byte):
                headers = self._headers if body is not None else self._get_headers
                if extra:
                    headers = {**headers, **extra}
                sent = with_trace_context(headers)  # a traced attempt's traceparent
                response = await session.request(method, url, data=body, headers=sent, **own)
        if response.status < 400:
            return response
        try:
            with mapped_transport_errors(self.name, started=True):
                content = await read_error_body(response, limits.stream_idle)
            retry_after = parse_retry_after(response.headers)
            raise self._parse_error(response.status, content, retry_after, self.name)
        finally:
            response.release()
