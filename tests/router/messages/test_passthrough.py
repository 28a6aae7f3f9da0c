"""The Anthropic-shaped door in front of Anthropic itself: the body goes upstream as the
client sent it (`cache_control`, thinking blocks, server tools, `top_k` kept; the model
name mapped), `anthropic-beta` headers with it; the answer and each stream event come back
untranslated, cache usage included. A 529 fails over to an OpenAI-compatible deployment
(which gets the chat form); what chat has no form for goes to Anthropic deployments only."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import pytest

from tests.fakes.anthropic_upstream import FakeAnthropicUpstream, Reply, overloaded
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.turnout_server import RunningTurnout, simple_config

KEY = "sk-messages-passthrough"
CACHED = {"cache_creation_input_tokens": 40, "cache_read_input_tokens": 900}
SYSTEM = [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}]
WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 2}


@pytest.fixture
def claude() -> Iterator[FakeAnthropicUpstream]:
    with FakeAnthropicUpstream() as fake:
        yield fake


@pytest.fixture
def server(
    turnout: Callable[[dict[str, Any]], RunningTurnout],
    claude: FakeAnthropicUpstream,
    upstream: FakeOpenAIUpstream,
) -> RunningTurnout:
    providers = {
        "claude": {"kind": "anthropic", "base_url": claude.base_url, "api_key": "sk-ant-up"},
        "open": {"kind": "openai", "base_url": upstream.base_url},
    }
    models = {
        "sonnet": {
            "deployments": [
                {"provider": "claude", "model": "claude-sonnet-upstream"},
                {"provider": "open", "model": "open-model"},
            ],
            "match": ["claude-*sonnet*"],
        },
        "chat-only": {"deployments": [{"provider": "open", "model": "open-model"}]},
    }
    return turnout(simple_config({}, providers=providers, models=models, keys=[{"key": KEY}]))


@pytest.fixture
def client(server: RunningTurnout) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0)


def test_the_body_and_beta_headers_reach_anthropic_as_sent(
    client: anthropic.Anthropic, claude: FakeAnthropicUpstream
) -> None:
    claude.enqueue(Reply(text="Cached hello", usage=CACHED))
    messages: Any = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}],
        }
    ]
    message = client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        system=SYSTEM,  # type: ignore[arg-type]
        messages=messages,
        extra_body={"top_k": 5},
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
    )

    assert message.content[0].text == "Cached hello"  # type: ignore[union-attr]
    assert message.model == "claude-sonnet-4-5"
    assert message.usage.cache_read_input_tokens == 900
    assert message.usage.cache_creation_input_tokens == 40
    sent = claude.requests[-1]
    assert sent.json["model"] == "claude-sonnet-upstream"
    assert sent.json["system"] == SYSTEM
    assert sent.json["messages"] == messages
    assert sent.json["top_k"] == 5
    assert sent.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert sent.headers["x-api-key"] == "sk-ant-up"  # the provider's key, never the client's


def test_a_stream_is_relayed_event_by_event(
    client: anthropic.Anthropic, claude: FakeAnthropicUpstream
) -> None:
    claude.enqueue(Reply(text="Streamed from Claude", usage=CACHED))
    with client.messages.stream(
        model="sonnet", max_tokens=64, messages=[{"role": "user", "content": "go"}]
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()

    assert kinds[0] == "message_start"
    assert kinds[-1] == "message_stop"
    assert final.content[0].text == "Streamed from Claude"  # type: ignore[union-attr]
    assert final.usage.cache_read_input_tokens == 900
    assert final.model == "sonnet"


def test_overloaded_anthropic_fails_over_to_the_chat_form(
    client: anthropic.Anthropic, claude: FakeAnthropicUpstream, upstream: FakeOpenAIUpstream
) -> None:
    claude.enqueue(*[overloaded()] * 5)
    message = client.messages.create(
        model="sonnet",
        max_tokens=64,
        system=SYSTEM,
        messages=[{"role": "user", "content": "hi"}],  # type: ignore[arg-type]
    )
    assert message.content[0].text == "echo: hi"  # type: ignore[union-attr]
    chat = [r for r in upstream.requests if r.path.endswith("/chat/completions")][-1].json
    assert chat["messages"][0] == {"role": "system", "content": "You are terse."}


def test_a_server_tool_goes_to_anthropic_only(
    client: anthropic.Anthropic, claude: FakeAnthropicUpstream, upstream: FakeOpenAIUpstream
) -> None:
    claude.enqueue(Reply(text="Searched."))
    message = client.messages.create(
        model="sonnet",
        max_tokens=64,
        tools=[WEB_SEARCH],  # type: ignore[list-item]
        messages=[{"role": "user", "content": "news?"}],
    )
    assert message.content[0].text == "Searched."  # type: ignore[union-attr]
    assert claude.requests[-1].json["tools"] == [WEB_SEARCH]

    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(
            model="chat-only",
            max_tokens=64,
            tools=[WEB_SEARCH],  # type: ignore[list-item]
            messages=[{"role": "user", "content": "news?"}],
        )
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert not [r for r in upstream.requests if r.path.endswith("/chat/completions")]


def test_count_tokens_is_asked_of_anthropic(
    client: anthropic.Anthropic, claude: FakeAnthropicUpstream
) -> None:
    raw = client.messages.with_raw_response.count_tokens(
        model="sonnet",
        system="Be terse.",
        messages=[{"role": "user", "content": "count these words"}],
    )
    assert raw.headers["x-turnout-token-count"] == "upstream"
    assert raw.parse().input_tokens > 0
    sent = claude.requests[-1]
    assert sent.path == "/v1/messages/count_tokens"
    assert sent.json["model"] == "claude-sonnet-upstream"
    assert "max_tokens" not in sent.json
