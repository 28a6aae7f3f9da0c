"""Anthropic pass-through (Endpoint.MESSAGES, policies/native.py): a trace carrying a
Messages request as the client sent it goes through `Dispatcher.complete`/`open_stream`
to a real Anthropic adapter in front of the fake Anthropic API on loopback, untranslated
both ways; an OpenAI-compatible deployment of the same plan gets the chat form."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent

from policies.config import TurnoutConfig
from policies.dispatch import Dispatcher
from policies.native import NativeRequest, takes_native
from policies.plan import DeploymentPlan, plan_request
from policies.redaction import Redactor
from policies.trace import Trace
from providers.anthropic.native import forwarded_headers, native_event
from providers.base import Provider
from providers.capabilities import Capabilities
from providers.errors import UpstreamError
from providers.registry import build_provider
from providers.sse import SSEEvent
from providers.types import Endpoint, JSONObject, ProviderRequest
from router.pipeline import total_tokens
from tests.fakes.anthropic_upstream import (
    CutStream,
    FakeAnthropicUpstream,
    MidStreamError,
    Reply,
    overloaded,
    stream_events,
)
from tests.fakes.openai_upstream import FakeOpenAIUpstream

ANTHROPIC_KEY = "sk-ant-api03-configured-ANTHROPIC-key"
BETA = "prompt-caching-2024-07-31,interleaved-thinking-2025-05-14"
CACHE_USAGE = {"cache_creation_input_tokens": 1500, "cache_read_input_tokens": 700}
# What a Messages client sends: everything chat has no form for, kept on the way through.
NATIVE_BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 1024,
    "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
    "messages": [
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "A long document.",
                    "cache_control": {"type": "ephemeral", "ttl": "1h"},
                }
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Short, then.", "signature": "c2lnbmF0dXJl"},
                {"type": "text", "text": "Read it."},
            ],
        },
        {"role": "user", "content": "Summarize it."},
    ],
    "thinking": {"type": "enabled", "budget_tokens": 512},
    "top_k": 5,
    "metadata": {"user_id": "user-42"},
}
# The same request's chat form (the door's to make): what an OpenAI deployment gets.
CHAT_BODY: dict[str, Any] = {
    "model": "c",
    "messages": [{"role": "user", "content": "Summarize it."}],
    "max_tokens": 1024,
}
# The client's headers: only `anthropic-beta` may travel upstream.
CLIENT_HEADERS = {
    "Anthropic-Beta": BETA,
    "x-api-key": "the-client's-turnout-key",
    "authorization": "Bearer the-client's-turnout-key",
    "anthropic-version": "2099-01-01",
}
STREAM_EVENT: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RawMessageStreamEvent)


@dataclass
class Setup:
    claude: FakeAnthropicUpstream
    openai: FakeOpenAIUpstream
    dispatcher: Dispatcher
    plan: DeploymentPlan

    def trace(self, stream: bool = False) -> Trace:
        body = {**NATIVE_BODY, "stream": True} if stream else NATIVE_BODY
        native = NativeRequest.of(Endpoint.MESSAGES, body, CLIENT_HEADERS)
        return self.dispatcher.start_trace(self.plan, native=native)

    def chat(self, stream: bool = False) -> dict[str, Any]:
        return {**CHAT_BODY, "stream": True} if stream else dict(CHAT_BODY)

    async def streamed(self, trace: Trace) -> list[JSONObject]:
        """The relayed stream's events, as the door would get them."""
        body = self.chat(stream=True)
        opened = await self.dispatcher.open_stream(self.plan, Endpoint.CHAT, body, trace)
        relayed = self.dispatcher.relay(opened, trace, (self.plan, Endpoint.CHAT, body))
        return [event async for event in relayed]


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    with FakeAnthropicUpstream() as claude, FakeOpenAIUpstream() as openai:
        config = TurnoutConfig.model_validate(
            {
                "providers": {
                    "claude": {
                        "kind": "anthropic",
                        "base_url": claude.base_url,
                        "api_key": ANTHROPIC_KEY,
                    },
                    "oai": {"kind": "openai", "base_url": openai.base_url},
                },
                "models": {
                    "c": {
                        "deployments": [
                            {"provider": "claude", "model": "claude-upstream"},
                            {"provider": "oai", "model": "gpt-upstream"},
                        ]
                    }
                },
                "timeouts": {"connect": 2, "first_byte": 5, "stream_idle": 5, "total": 20},
                "retry": {"attempts": 1},
            }
        )
        providers: dict[str, Provider] = {
            name: build_provider(name, settings, config.timeouts)
            for name, settings in config.providers.items()
        }
        for provider in providers.values():
            await provider.start()
        dispatcher = Dispatcher(providers, redactor=Redactor.from_config(config))
        try:
            yield Setup(claude, openai, dispatcher, plan_request(config, "c"))
        finally:
            for provider in providers.values():
                await provider.aclose()


def _sent_as_is(setup: Setup, *, stream: bool) -> None:
    """The one upstream call got the client's body (model mapped) and its beta header, with
    the provider's own credentials and version."""
    [request] = setup.claude.requests
    assert request.path == "/v1/messages"
    expected = {**copy.deepcopy(NATIVE_BODY), "model": "claude-upstream"}
    if stream:
        expected["stream"] = True
    assert request.json == expected
    assert request.headers["anthropic-beta"] == BETA
    assert request.headers["x-api-key"] == ANTHROPIC_KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers
    assert setup.openai.requests == []


async def test_a_whole_answer_passes_through(setup: Setup) -> None:
    setup.claude.enqueue(Reply(text="A summary.", usage=CACHE_USAGE))
    trace = setup.trace()

    answer = await setup.dispatcher.complete(setup.plan, Endpoint.CHAT, setup.chat(), trace)

    _sent_as_is(setup, stream=False)
    message = Message.model_validate(answer.body)  # Anthropic's own shape, untranslated
    assert message.content[0].type == "text"
    assert message.content[0].text == "A summary."
    assert message.model == "claude-upstream"
    assert answer.body["usage"] == {"input_tokens": 12, "output_tokens": 2, **CACHE_USAGE}
    assert trace.native_answer
    assert trace.target is not None
    assert trace.target.deployment.model == "claude-upstream"
    # The limits settle on every token Anthropic counted, the prompt cache's included.
    assert total_tokens(answer.body["usage"]) == 12 + 2 + 1500 + 700


async def test_a_stream_passes_through_event_by_event(setup: Setup) -> None:
    setup.claude.enqueue(Reply(text="A short summary.", usage=CACHE_USAGE))
    trace = setup.trace(stream=True)

    events = await setup.streamed(trace)

    _sent_as_is(setup, stream=True)
    upstream = [data for _, data in stream_events(NATIVE_BODY, Reply(text="A short summary."))]
    assert [e["type"] for e in events] == [e["type"] for e in upstream]
    assert events[-1]["type"] == "message_stop"
    for event in events:  # `ping` is no event the SDK's types model
        if event["type"] != "ping":
            STREAM_EVENT.validate_python(event)
    assert events[0]["message"]["usage"] == {"input_tokens": 12, "output_tokens": 1, **CACHE_USAGE}
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    assert text == "A short summary."
    assert trace.native_answer
    # The ledger read the call's usage from Anthropic's events (a call no answer settles
    # is charged by it): message_start's counts, output from message_delta.
    [tally] = trace.ledger.tallies
    [call] = tally.calls
    assert call.usage is not None
    assert total_tokens(dict(call.usage)) == 12 + 3 + 1500 + 700


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
async def test_overloaded_anthropic_fails_over_to_the_chat_form(setup: Setup, stream: bool) -> None:
    setup.claude.enqueue(overloaded())
    trace = setup.trace(stream=stream)

    if stream:
        events = await setup.streamed(trace)
        assert events[0]["object"] == "chat.completion.chunk"
    else:
        answer = await setup.dispatcher.complete(setup.plan, Endpoint.CHAT, setup.chat(), trace)
        assert answer.body["object"] == "chat.completion"

    assert len(setup.claude.requests) == 1  # the native request, refused with a 529
    [request] = setup.openai.requests
    # (a stream also asks for its usage: policies/stream_translation.py)
    sent = {k: v for k, v in request.json.items() if k != "stream_options"}
    assert sent == {**setup.chat(stream), "model": "gpt-upstream"}
    assert "anthropic-beta" not in request.headers
    assert not trace.native_answer
    assert [a.status for a in trace.attempts] == [503, 200]
    assert trace.target is not None
    assert trace.target.deployment.model == "gpt-upstream"


async def test_an_error_event_mid_stream_ends_it_masked(setup: Setup) -> None:
    setup.claude.enqueue(MidStreamError(after_events=4, echo_headers=True))
    trace = setup.trace(stream=True)
    body = setup.chat(stream=True)
    opened = await setup.dispatcher.open_stream(setup.plan, Endpoint.CHAT, body, trace)
    relayed = setup.dispatcher.relay(opened, trace, (setup.plan, Endpoint.CHAT, body))
    events: list[JSONObject] = []

    async def relay_all() -> None:
        async for event in relayed:
            events.append(event)

    with pytest.raises(UpstreamError) as caught:
        await relay_all()

    assert [e["type"] for e in events] == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
    ]
    error = caught.value
    assert (error.status, error.type) == (503, "overloaded_error")
    assert ANTHROPIC_KEY not in error.message
    assert str(setup.claude.port) not in error.message
    assert "Overloaded" in error.message
    # Not continued on the OpenAI deployment: a native stream has no chat to continue.
    assert trace.continuation == "not_continuable"
    assert setup.openai.requests == []


async def test_a_stream_cut_before_message_stop_is_a_failure(setup: Setup) -> None:
    setup.claude.enqueue(CutStream(after_events=4))
    trace = setup.trace(stream=True)

    with pytest.raises(UpstreamError) as caught:
        await setup.streamed(trace)

    assert caught.value.status == 502
    assert "without message_stop" in caught.value.message
    assert trace.continuation == "not_continuable"


async def test_the_adapter_forwards_only_the_beta_header(setup: Setup) -> None:
    """Even handed a client's credentials, the adapter sends its own."""
    provider = build_provider(
        "direct",
        TurnoutConfig.model_validate(
            {
                "providers": {
                    "direct": {
                        "kind": "anthropic",
                        "base_url": setup.claude.base_url,
                        "api_key": ANTHROPIC_KEY,
                    }
                },
                "models": {},
            }
        ).providers["direct"],
        TurnoutConfig.model_validate({"providers": {}, "models": {}}).timeouts,
    )
    await provider.start()
    try:
        body = {**NATIVE_BODY, "model": "claude-upstream"}
        request = ProviderRequest(Endpoint.MESSAGES, body, headers=CLIENT_HEADERS)
        answer = await provider.complete(request)
    finally:
        await provider.aclose()
    assert answer.body["type"] == "message"
    [sent] = setup.claude.requests
    assert sent.headers["x-api-key"] == ANTHROPIC_KEY
    assert sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.headers["anthropic-beta"] == BETA
    assert "authorization" not in sent.headers


def test_a_native_request_keeps_only_the_headers_its_api_forwards() -> None:
    native = NativeRequest.of(Endpoint.MESSAGES, NATIVE_BODY, CLIENT_HEADERS)
    assert dict(native.headers) == {"anthropic-beta": BETA}
    assert dict(NativeRequest.of(Endpoint.RESPONSES, {}, CLIENT_HEADERS).headers) == {}
    assert forwarded_headers({"X-Api-Key": "k", "ANTHROPIC-BETA": "b"}) == {"anthropic-beta": "b"}


def test_which_deployments_take_which_native_request() -> None:
    anthropic = frozenset({Endpoint.CHAT, Endpoint.MESSAGES})
    openai = frozenset(Endpoint) - {Endpoint.MESSAGES}
    plain, declared = Capabilities(), Capabilities(responses=True)
    assert takes_native(plain, anthropic, Endpoint.MESSAGES)  # its own API: no flag
    assert not takes_native(declared, openai, Endpoint.MESSAGES)
    assert takes_native(declared, openai, Endpoint.RESPONSES)
    assert not takes_native(plain, openai, Endpoint.RESPONSES)  # not declared
    assert not takes_native(declared, anthropic, Endpoint.RESPONSES)


@pytest.mark.parametrize(
    ("usage", "tokens"),
    [
        ({"input_tokens": 10, "output_tokens": 5}, 15),
        ({"input_tokens": 10, "output_tokens": 5, **CACHE_USAGE}, 2215),
        ({"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}, 15),  # a Response's
        ({"prompt_tokens": 3, "completion_tokens": 4}, 7),
        ({}, None),
    ],
)
def test_total_tokens_reads_anthropic_usage(usage: dict[str, int], tokens: int | None) -> None:
    assert total_tokens(usage) == tokens


def test_a_stream_event_without_a_type_takes_its_name() -> None:
    event = native_event("claude", SSEEvent('{"index": 0}', "content_block_stop"))
    assert event == {"index": 0, "type": "content_block_stop"}
    with pytest.raises(UpstreamError):
        native_event("claude", SSEEvent('{"index": 0}'))
    with pytest.raises(UpstreamError) as caught:
        native_event("claude", SSEEvent('{"type": "error", "error": {"type": "api_error"}}'))
    assert caught.value.status == 500
