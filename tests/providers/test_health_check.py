"""`Provider.check` for each kind: the HTTP adapters GET their backend's model list (or the
configured path) through their own session and error mapping; the local providers are
healthy while their engine (or model) is up, with nothing sent over a network."""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from providers.anthropic.adapter import AnthropicProvider
from providers.anthropic.settings import AnthropicSettings
from providers.capabilities import Capabilities
from providers.errors import Failure, UpstreamError
from providers.local.embeddings import LocalEmbedder
from providers.local.provider import LocalGenerator, LocalModel
from providers.openai.adapter import OpenAIProvider
from providers.openai.settings import OpenAISettings
from providers.timeouts import UpstreamTimeouts
from tests.fakes.anthropic_upstream import FakeAnthropicUpstream, overloaded
from tests.fakes.openai_upstream import FakeOpenAIUpstream, MalformedEvent, Reset, Status

TIMEOUTS = UpstreamTimeouts(connect=2, first_byte=2, stream_idle=2)


async def openai_provider(up: FakeOpenAIUpstream, **settings: Any) -> OpenAIProvider:
    config = OpenAISettings(kind="openai", base_url=up.base_url, **settings)
    provider = OpenAIProvider("up", config, TIMEOUTS)
    await provider.start()
    return provider


@pytest.fixture
async def up() -> AsyncIterator[FakeOpenAIUpstream]:
    async with FakeOpenAIUpstream() as fake:
        yield fake


async def test_openai_gets_the_model_list_with_its_auth(up: FakeOpenAIUpstream) -> None:
    provider = await openai_provider(up, api_key="sk-test", headers={"x-org": "o1"})
    try:
        await provider.check()
    finally:
        await provider.aclose()
    [request] = up.requests
    assert (request.method, request.path, request.body) == ("GET", "/v1/models", b"")
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.headers["x-org"] == "o1"


async def test_openai_checks_the_configured_path(up: FakeOpenAIUpstream) -> None:
    listed = await openai_provider(up, health_check={"path": "/models/gpt-4o"})
    missing = await openai_provider(up, health_check={"path": "/models/nope"})
    try:
        await listed.check()
        with pytest.raises(UpstreamError) as raised:  # the fake lists no such model
            await missing.check()
    finally:
        await listed.aclose()
        await missing.aclose()
    assert [r.path for r in up.requests] == ["/v1/models/gpt-4o", "/v1/models/nope"]
    assert (raised.value.status, raised.value.code) == (404, "model_not_found")


async def test_an_http_provider_not_started_is_unhealthy(up: FakeOpenAIUpstream) -> None:
    provider = OpenAIProvider("up", OpenAISettings(kind="openai", base_url=up.base_url), TIMEOUTS)
    with pytest.raises(UpstreamError) as raised:
        await provider.check()
    assert raised.value.status == 503
    assert up.requests == []


@pytest.mark.parametrize(
    ("behavior", "failure", "status"),
    [
        (Status(401), Failure.STATUS, 401),
        (Status(503), Failure.STATUS, 503),
        (MalformedEvent(), Failure.PROTOCOL, 502),
        (Reset(), Failure.CONNECT, 502),
    ],
)
async def test_openai_maps_an_unhealthy_answer_like_a_failed_call(
    up: FakeOpenAIUpstream, behavior: Any, failure: Failure, status: int
) -> None:
    up.set_models_behavior(behavior)
    provider = await openai_provider(up)
    try:
        with pytest.raises(UpstreamError) as raised:
            await provider.check()
    finally:
        await provider.aclose()
    assert (raised.value.failure, raised.value.status) == (failure, status)


async def test_anthropic_gets_its_models_api_with_key_and_version() -> None:
    with FakeAnthropicUpstream() as claude:
        settings = AnthropicSettings(kind="anthropic", base_url=claude.base_url, api_key="sk-ant")
        provider = AnthropicProvider("claude", settings, TIMEOUTS)
        await provider.start()
        try:
            await provider.check()
            claude.set_models_status(overloaded())
            with pytest.raises(UpstreamError) as raised:
                await provider.check()
        finally:
            await provider.aclose()
        requests = claude.requests
    assert [(r.method, r.path) for r in requests] == [("GET", "/v1/models")] * 2
    assert requests[0].headers["x-api-key"] == "sk-ant"
    assert requests[0].headers["anthropic-version"] == "2023-06-01"
    assert (raised.value.status, raised.value.type) == (503, "overloaded_error")  # as for calls


async def test_a_local_generator_is_healthy_while_its_engine_runs() -> None:
    # The engine idles: never called. No prefix store (store_blocks 0).
    runner = SimpleNamespace(max_slots=1, max_context=8, block_tokens=16, store_blocks=0)
    model = LocalModel(runner, sampler=None, adapter=None)
    provider = LocalGenerator("local", lambda: model, Capabilities())

    with pytest.raises(UpstreamError) as before:
        await provider.check()
    await provider.start()
    await provider.check()
    await provider.aclose()
    with pytest.raises(UpstreamError) as after:
        await provider.check()
    assert before.value.status == after.value.status == 503


async def test_a_local_embedder_is_healthy_once_loaded() -> None:
    provider = LocalEmbedder("embed", lambda: SimpleNamespace(dimensions=4))
    with pytest.raises(UpstreamError):
        await provider.check()
    await provider.start()
    await provider.check()
    await provider.aclose()
    with pytest.raises(UpstreamError):
        await provider.check()
