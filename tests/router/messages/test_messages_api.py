"""The Anthropic-shaped door end to end through the official `anthropic` SDK (sync and
async, an `x-api-key` or a Bearer key) against a real Turnout in front of an
OpenAI-compatible fake: what the chat backend is sent (system, image parts, sampling
options, tool calls and their results across two turns), the answer as a typed
`Message`, `anthropic-version` required, Claude Code's `?beta=true` and `anthropic-beta`,
and a Claude model name taken by a `match:` pattern. The stream:
test_messages_stream.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest
from anthropic.types import Message

from tests.fakes.behaviors import Ok, ToolCall
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.router.messages.door import HI, KEY, VERSION, WEATHER, last_chat, sdk, start_door
from tests.turnout_server import RunningTurnout

# A 1x1 transparent PNG.
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6"
    "kgAAAABJRU5ErkJggg=="
)


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIUpstream]:
    with FakeOpenAIUpstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def server(upstream: FakeOpenAIUpstream) -> Iterator[RunningTurnout]:
    running = start_door(upstream)
    yield running
    running.stop()


@pytest.fixture
def client(server: RunningTurnout, upstream: FakeOpenAIUpstream) -> Iterator[anthropic.Anthropic]:
    upstream.reset()
    with sdk(server) as client:
        yield client


def test_a_message_is_answered_and_the_chat_backend_gets_the_system_first(
    client: anthropic.Anthropic, upstream: FakeOpenAIUpstream
) -> None:
    raw = client.messages.with_raw_response.create(
        model="m",
        max_tokens=50,
        system="Be brief.",
        messages=[{"role": "user", "content": "hello"}],
    )
    message = raw.parse()

    assert isinstance(message, Message)
    assert message.id.startswith("msg_")
    assert message.model == "m"
    assert message.role == "assistant"
    assert [block.type for block in message.content] == ["text"]
    assert message.content[0].text == "echo: hello"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0
    assert raw.headers["x-turnout-deployment"] == "up/up-model"
    assert message._request_id == raw.headers["x-request-id"]
    sent = last_chat(upstream)
    assert sent["model"] == "up-model"
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello"},
    ]
    assert sent["max_completion_tokens"] == 50


async def test_the_async_client_and_a_bearer_key(
    server: RunningTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.reset()
    async with anthropic.AsyncAnthropic(
        base_url=server.url, auth_token=KEY, max_retries=0, timeout=20
    ) as sdk:
        message = await sdk.messages.create(model="m", max_tokens=20, messages=HI)
        async with sdk.messages.stream(model="m", max_tokens=20, messages=HI) as stream:
            texts = [text async for text in stream.text_stream]
            final = await stream.get_final_message()

    assert message.content[0].text == "echo: hi"  # type: ignore[union-attr]
    assert "".join(texts) == "echo: hi"
    assert final.content[0].text == "echo: hi"  # type: ignore[union-attr]
    # The key reached Turnout as a Bearer token, never the upstream.
    sent = upstream.requests[-1]
    assert KEY not in sent.headers.get("authorization", "")
    with anthropic.Anthropic(base_url=server.url, auth_token=KEY, max_retries=0) as sync:
        assert sync.messages.create(model="m", max_tokens=20, messages=HI).content


def test_anthropic_version_is_required_and_any_date_is_taken(server: RunningTurnout) -> None:
    body = {"model": "m", "max_tokens": 20, "messages": HI}
    with server.http() as http:
        missing = http.post("/v1/messages", json=body, headers={"x-api-key": KEY})
        later = http.post(
            "/v1/messages",
            json=body,
            headers={"x-api-key": KEY, "anthropic-version": "2099-12-31"},
        )

    assert missing.status_code == 400
    error = missing.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert "anthropic-version" in error["error"]["message"]
    assert missing.headers["request-id"] == missing.headers["x-request-id"]
    assert later.status_code == 200
    Message.model_validate(later.json())


def test_system_blocks_and_an_image_reach_the_chat_backend_as_parts(
    client: anthropic.Anthropic, upstream: FakeOpenAIUpstream
) -> None:
    client.messages.create(
        model="m",
        max_tokens=20,
        system=[{"type": "text", "text": "You see."}, {"type": "text", "text": "Be brief."}],
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                    },
                ],
            }
        ],
    )

    assert last_chat(upstream)["messages"] == [
        {"role": "system", "content": "You see.\nBe brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
            ],
        },
    ]


def test_sampling_options_and_the_user_reach_the_chat_backend(
    client: anthropic.Anthropic, upstream: FakeOpenAIUpstream
) -> None:
    client.messages.create(
        model="m",
        max_tokens=30,
        messages=HI,
        stop_sequences=["END", "\n\n"],
        metadata={"user_id": "user-42"},
        # This SDK's `create` no longer names them (Anthropic's newest models fix them);
        # the API still takes them, and older SDKs and other clients send them.
        extra_body={"temperature": 0.25, "top_p": 0.5, "top_k": 7},
    )

    sent = last_chat(upstream)
    assert sent["stop"] == ["END", "\n\n"]
    assert sent["temperature"] == 0.25
    assert sent["top_p"] == 0.5
    assert sent["top_k"] == 7
    assert sent["user"] == "user-42"
    assert sent["max_completion_tokens"] == 30


def test_max_tokens_is_required(client: anthropic.Anthropic, upstream: FakeOpenAIUpstream) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        # The typed `create` will not leave it out: the SDK's plain post does.
        client.post("/v1/messages", cast_to=Message, body={"model": "m", "messages": HI})

    assert caught.value.status_code == 400
    assert caught.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "max_tokens" in caught.value.message
    assert upstream.requests == []


def test_tool_use_across_two_turns(
    client: anthropic.Anthropic, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(
        ToolCall("get_weather", '{"city": "Paris"}', call_id="call_p1"),
        Ok(text="It is sunny in Paris."),
    )
    question: Any = {"role": "user", "content": "Weather in Paris?"}
    first = client.messages.create(
        model="m",
        max_tokens=50,
        messages=[question],
        tools=[WEATHER],
        tool_choice={"type": "auto"},
    )
    [call] = first.content
    assert first.stop_reason == "tool_use"
    assert call.type == "tool_use"
    assert (call.id, call.input) == ("call_p1", {"city": "Paris"})

    result: Any = {"type": "tool_result", "tool_use_id": call.id, "content": "22C, sunny"}
    second = client.messages.create(
        model="m",
        max_tokens=50,
        tools=[WEATHER],
        messages=[
            question,
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": [result]},
        ],
    )

    assert second.stop_reason == "end_turn"
    assert second.content[0].text == "It is sunny in Paris."  # type: ignore[union-attr]
    sent = last_chat(upstream)["messages"]
    assert sent[1]["role"] == "assistant"
    assert sent[1]["tool_calls"] == [
        {
            "id": "call_p1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        }
    ]
    assert sent[2] == {"role": "tool", "tool_call_id": "call_p1", "content": "22C, sunny"}
    assert len(sent) == 3


def test_claude_codes_beta_query_and_beta_header_are_accepted(
    client: anthropic.Anthropic,
) -> None:
    # The SDK's beta resource posts to `/v1/messages?beta=true` with `anthropic-beta`,
    # as Claude Code does.
    message = client.beta.messages.create(
        model="m",
        max_tokens=20,
        messages=HI,
        betas=["interleaved-thinking-2025-05-14", "fine-grained-tool-streaming-2025-05-14"],
    )
    with client.beta.messages.stream(
        model="m", max_tokens=20, messages=HI, betas=["some-future-beta-2031-01-01"]
    ) as stream:
        streamed = stream.get_final_message()
    counted = client.beta.messages.count_tokens(
        model="m", messages=HI, betas=["token-counting-2024-11-01"]
    )

    assert message.content[0].text == "echo: hi"  # type: ignore[union-attr]
    assert streamed.content[0].text == "echo: hi"  # type: ignore[union-attr]
    assert counted.input_tokens > 0


def test_a_claude_model_name_is_taken_by_a_match_pattern(
    client: anthropic.Anthropic, upstream: FakeOpenAIUpstream
) -> None:
    raw = client.messages.with_raw_response.create(
        model="claude-opus-4-8", max_tokens=20, messages=HI
    )
    with client.messages.stream(model="claude-opus-4-8", max_tokens=20, messages=HI) as stream:
        started = next(e for e in stream if e.type == "message_start")
        final = stream.get_final_message()

    assert raw.parse().model == "claude-opus-4-8"
    assert raw.headers["x-turnout-model"] == "opus"
    assert started.message.model == "claude-opus-4-8"
    assert final.model == "claude-opus-4-8"
    assert [r.json["model"] for r in upstream.requests] == ["big-model", "big-model"]


def test_a_plain_bearer_request_gets_both_request_id_headers(server: RunningTurnout) -> None:
    response = httpx.post(
        f"{server.url}/v1/messages",
        json={"model": "m", "max_tokens": 5, "messages": HI},
        headers={"authorization": f"Bearer {KEY}", **VERSION},
        timeout=20,
    )
    assert response.status_code == 200
    assert response.headers["request-id"] == response.headers["x-request-id"]
