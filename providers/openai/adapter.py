"""`kind: openai`: request builder → call → translate back, for OpenAI-compatible APIs."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

import orjson

from providers.errors import UpstreamError, upstream_said
from providers.http_adapter import HTTPProvider
from providers.load_metrics import LoadScraper
from providers.load_report import LoadReport
from providers.openai.settings import OpenAISettings
from providers.openai.wire import (
    DONE,
    ResponsesProgress,
    StreamProgress,
    error_from_event,
    error_from_payload,
    error_from_response,
    parse_event,
    to_wire,
)
from providers.timeouts import UpstreamTimeouts
from providers.types import Endpoint, JSONObject, ProviderRequest, ProviderResponse

# Anthropic's Messages API is no OpenAI-compatible server's: such a deployment gets the
# Messages door's request as chat. (A constant: the dispatcher reads it on every turn.)
_ENDPOINTS = frozenset(Endpoint) - {Endpoint.MESSAGES}


class OpenAIProvider(HTTPProvider):
    def __init__(self, name: str, settings: OpenAISettings, timeouts: UpstreamTimeouts) -> None:
        headers = dict(settings.headers)
        if settings.api_key:
            headers["authorization"] = f"Bearer {settings.api_key}"
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
        self._base_url = settings.base_url
        metrics = settings.load_metrics
        self._scraper = LoadScraper(name, metrics) if metrics is not None else None

    @property
    def endpoints(self) -> frozenset[Endpoint]:
        return _ENDPOINTS

    async def start(self) -> None:
        await super().start()
        if self._scraper is not None:
            self._scraper.start()

    async def aclose(self) -> None:
        if self._scraper is not None:
            await self._scraper.aclose()
        await super().aclose()

    def load(self) -> int | None:
        """The backend's own queue and running count, while its last scrape is fresh."""
        report = self.load_report()
        return report.requests if report is not None else None

    def load_report(self, *, stale: bool = False) -> LoadReport | None:
        scraper = self._scraper
        if scraper is None:
            return None
        return scraper.report if stale else scraper.fresh_report()

    def load_scrape_failures(self) -> int | None:
        return self._scraper.failures if self._scraper is not None else None

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        body = await self.post_json(self._url(request), to_wire(request.body), request.timeouts)
        if not isinstance(body, dict):
            raise UpstreamError.protocol(f"{self.name}: response is not a JSON object")
        error = error_from_payload(body, in_stream=False)
        if error is not None:
            raise error
        _check_shape(self.name, request.endpoint, body)
        return ProviderResponse(body=body)

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        responses = request.endpoint is Endpoint.RESPONSES
        progress = ResponsesProgress() if responses else StreamProgress(request)
        events = self.post_events(self._url(request), to_wire(request.body), request.timeouts)
        async with contextlib.aclosing(events):
            async for event in events:
                parsed = parse_event(event)
                if parsed == DONE:
                    return
                if not isinstance(parsed, dict):
                    # It may have carried text: skipping it could pass a cut answer off as
                    # whole. A broken stream is rescued (continued) or ends in an error.
                    raise UpstreamError.stream_broken(f"{self.name}: malformed stream event")
                error = error_from_payload(parsed, in_stream=True) or error_from_event(parsed)
                if error is not None:
                    raise error
                if responses or "choices" in parsed:  # a usage-only chunk may have none
                    _check_shape(self.name, request.endpoint, parsed, in_stream=True)
                progress.saw(parsed)
                yield parsed
        # Some servers never send [DONE] (the Responses API never does): the body's end is
        # then the end, but only once everything the stream owes has come; anything short
        # of that is a cut.
        missing = progress.missing()
        if missing:
            raise UpstreamError.stream_broken(
                f"{self.name}: stream ended without [DONE] before {missing}"
            )

    def _url(self, request: ProviderRequest) -> str:
        return self._base_url + request.endpoint.path


def _check_shape(name: str, endpoint: Endpoint, body: JSONObject, in_stream: bool = False) -> None:
    """A 200 whose body breaks OpenAI's schema where Turnout and clients read it is a
    protocol error: relayed as is, a `choices` that is a string (a proxy's page, a debug
    dump) would reach the client unmasked. The body goes to `detail`, for the log. A
    Responses API answer is a Response object (`object: response`, a list `output`); each
    event of its stream has a `type`."""
    problem: str | None = None
    if endpoint is Endpoint.RESPONSES and in_stream:
        problem = None if isinstance(body.get("type"), str) else "event has no `type`"
    elif endpoint is Endpoint.RESPONSES:
        if body.get("object") != "response" or not isinstance(body.get("output"), list):
            problem = "answer is not a Response object with a list `output`"
    else:
        field = "data" if endpoint is Endpoint.EMBEDDINGS else "choices"
        problem = None if isinstance(body.get(field), list) else f"`{field}` is not a list"
    if problem is not None:
        error = UpstreamError.protocol(f"{name}: response {problem}")
        error.detail = upstream_said(orjson.dumps(body))
        raise error


def _check_path(settings: OpenAISettings) -> str:
    """`GET /models`: listed by every OpenAI-compatible server (vLLM, llama.cpp, Ollama),
    cheap, and answered only when the API key is good."""
    check = settings.health_check
    return check.path if check is not None and check.path else "/models"
