"""The Anthropic adapter end to end: the official openai SDK talks to a real Turnout,
which talks to a fake Anthropic Messages API on loopback."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from tests.fakes.anthropic_upstream import (
    FakeAnthropicUpstream,
    MidStreamError,
    Reply,
    ToolUse,
    overloaded,
    prompt_too_long,
    rate_limited,
)
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[[dict[str, Any]], RunningTurnout]
MESSAGES: list[Any] = [{"role": "user", "content": "hi there"}]
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]
WEATHER = ToolUse("get_weather", {"city": "Paris", "units": ["celsius"]})


@pytest.fixture
def claude() -> Iterator[FakeAnthropicUpstream]:
    with FakeAnthropicUpstream() as fake:
        yield fake


@pytest.fixture
def server(turnout: StartTurnout, claude: FakeAnthropicUpstream) -> RunningTurnout:
    provider = {"kind": "anthropic", "base_url": claude.base_url, "api_key": "sk-ant-test"}
    return turnout(
        simple_config(
            {},
            providers={"claude": provider},
            models={"c": {"deployments": [{"provider": "claude", "model": "claude-haiku"}]}},
        )
    )


def test_plain_chat(server: RunningTurnout, claude: FakeAnthropicUpstream) -> None:
    with server.client() as client:
        completion = client.chat.completions.create(model="c", messages=MESSAGES)
    assert completion.choices[0].message.content == "Hello from Claude"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == "claude-haiku"
    assert completion.id == "msg_fake01"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 12
    [request] = claude.requests
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == "sk-ant-test"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in request.headers
    assert request.json == {
        "model": "claude-haiku",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi there"}]}],
        "max_tokens": 4096,
    }


def test_plain_chat_streamed(server: RunningTurnout, claude: FakeAnthropicUpstream) -> None:
    with server.client() as client:
        chunks = list(client.chat.completions.create(model="c", messages=MESSAGES, stream=True))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == "Hello from Claude"
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["stop"]
    assert claude.requests[0].json["stream"] is True


def test_tool_call_round_trip(server: RunningTurnout, claude: FakeAnthropicUpstream) -> None:
    claude.enqueue(Reply(text="Let me look.", tool=WEATHER), Reply(text="18C"))
    with server.client() as client:
        first = client.chat.completions.create(model="c", messages=MESSAGES, tools=TOOLS)
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.tool_calls is not None
        [tool_call] = choice.message.tool_calls
        assert tool_call.function.name == "get_weather"
        assert json.loads(tool_call.function.arguments) == dict(WEATHER.input)
        history: list[Any] = [
            *MESSAGES,
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": tool_call.id, "content": "18C sunny"},
        ]
        second = client.chat.completions.create(model="c", messages=history, tools=TOOLS)
    assert second.choices[0].message.content == "18C"
    sent = claude.requests[1].json["messages"]
    assert sent[1]["content"][-1] == {
        "type": "tool_use",
        "id": WEATHER.id,
        "name": "get_weather",
        "input": dict(WEATHER.input),
    }
    assert sent[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": WEATHER.id, "content": "18C sunny"}],
    }


def test_streamed_tool_call_arguments_reassemble(
    server: RunningTurnout, claude: FakeAnthropicUpstream
) -> None:
    claude.enqueue(Reply(text="Let me look.", tool=WEATHER))
    with server.client() as client:
        stream = client.chat.completions.create(
            model="c", messages=MESSAGES, tools=TOOLS, stream=True
        )
        chunks = list(stream)
    calls = [t for c in chunks for t in (c.choices[0].delta.tool_calls or [])]
    assert len(calls) > 2  # the arguments came in several fragments
    assert {t.index for t in calls} == {0}
    assert calls[0].id == WEATHER.id
    assert calls[0].function is not None
    assert calls[0].function.name == "get_weather"
    arguments = "".join(t.function.arguments or "" for t in calls if t.function)
    assert json.loads(arguments) == dict(WEATHER.input)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason]
    assert finishes == ["tool_calls"]


def test_overloaded_529_is_retried_then_succeeds(
    server: RunningTurnout, claude: FakeAnthropicUpstream
) -> None:
    claude.enqueue(overloaded(), rate_limited(retry_after="0"), Reply(text="third time"))
    with server.client() as client:
        completion = client.chat.completions.create(model="c", messages=MESSAGES)
    assert completion.choices[0].message.content == "third time"
    assert len(claude.requests) == 3


def test_overloaded_every_time_gives_503(
    server: RunningTurnout, claude: FakeAnthropicUpstream
) -> None:
    claude.enqueue(overloaded(), overloaded(), overloaded())
    with server.client() as client, pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="c", messages=MESSAGES)
    assert caught.value.status_code == 503
    assert len(claude.requests) == 3


def test_prompt_too_long_is_context_length_exceeded(
    server: RunningTurnout, claude: FakeAnthropicUpstream
) -> None:
    claude.enqueue(prompt_too_long())
    with server.client() as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="c", messages=MESSAGES)
    assert caught.value.code == "context_length_exceeded"
    assert len(claude.requests) == 1


def test_mid_stream_error_event_ends_stream_with_in_band_error(
    server: RunningTurnout, claude: FakeAnthropicUpstream
) -> None:
    claude.enqueue(MidStreamError(after_events=4))
    received: list[str] = []

    def consume(client: openai.OpenAI) -> None:
        for c in client.chat.completions.create(model="c", messages=MESSAGES, stream=True):
            received.append(c.choices[0].delta.content or "")

    with server.client() as client, pytest.raises(openai.APIError) as caught:
        consume(client)
    assert "".join(received) == "Hello"  # what came before the error, nothing invented
    assert "Overloaded" in str(caught.value)


def test_include_usage_gives_the_usage_chunk(server: RunningTurnout) -> None:
    with server.client() as client:
        chunks = list(
            client.chat.completions.create(
                model="c",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    *rest, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (12, 3)
    assert last.usage.total_tokens == 15
    assert all(c.usage is None and c.choices for c in rest)


def test_completions_on_anthropic_are_one_chat_per_prompt(
    server: RunningTurnout, claude: FakeAnthropicUpstream
) -> None:
    with server.client() as client:
        reply = client.completions.with_raw_response.create(
            model="c", prompt=["first prompt", "second prompt"], max_tokens=20
        )
    completion = reply.parse()
    assert reply.headers["x-turnout-emulated"] == "completions"
    assert [c.text for c in completion.choices] == ["Hello from Claude"] * 2
    assert [c.index for c in completion.choices] == [0, 1]
    sent = sorted(r.json["messages"][0]["content"][0]["text"] for r in claude.requests)
    assert sent == ["first prompt", "second prompt"]  # two chats, never one merged
    assert all(len(r.json["messages"]) == 1 for r in claude.requests)


def test_completions_on_anthropic_in_strict_mode_are_400(
    server: RunningTurnout, claude: FakeAnthropicUpstream
) -> None:
    with server.client() as client, pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(
            model="c", prompt="hi", extra_body={"router": {"translation": "strict"}}
        )
    assert "does not serve /v1/completions" in str(caught.value)
    assert claude.requests == []


def test_unsupported_option_is_400_naming_it(
    server: RunningTurnout, claude: FakeAnthropicUpstream
) -> None:
    with server.client() as client, pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="c", messages=MESSAGES, seed=3)
    assert "`seed` cannot be honoured by any deployment" in str(caught.value)
    assert caught.value.body["param"] == "seed"  # type: ignore[index]
    assert claude.requests == []
