"""Checks of the fake upstream's ``ToolCall`` answer and of its echo of a tool's output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from .openai_upstream import FakeOpenAIUpstream, Ok, ToolCall
from .test_openai_upstream import sse_data

ARGS = '{"city": "Paris", "unit": "celsius"}'
CHAT: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "weather in Paris?"}],
}


@pytest.fixture
def up() -> Iterator[FakeOpenAIUpstream]:
    with FakeOpenAIUpstream() as server:
        yield server


@pytest.fixture
def client(up: FakeOpenAIUpstream) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=up.base_url, api_key="k", max_retries=0) as c:
        yield c


def test_whole_answer_calls_the_tool(up: FakeOpenAIUpstream, client: openai.OpenAI) -> None:
    up.enqueue(ToolCall("get_weather", ARGS, call_id="call_1"), ToolCall("get_weather", "{}"))
    answer = client.chat.completions.create(**CHAT)
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    assert [c.model_dump() for c in choice.message.tool_calls or []] == [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": ARGS},
        }
    ]
    assert answer.usage is not None
    assert answer.usage.completion_tokens > 0
    fresh = client.chat.completions.create(**CHAT).choices[0].message.tool_calls or []
    assert fresh[0].id.startswith("call_")
    assert fresh[0].id != "call_1"


def test_stream_sends_the_call_in_fragments(up: FakeOpenAIUpstream) -> None:
    up.enqueue(ToolCall("get_weather", ARGS, call_id="call_7"))
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    events = sse_data(httpx.post(f"{up.base_url}/chat/completions", json=body).content)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1
    deltas = [c["choices"][0]["delta"] for c in chunks[:-1]]
    assert deltas[0] == {"role": "assistant", "content": None}
    assert deltas[1] == {
        "tool_calls": [
            {
                "index": 0,
                "id": "call_7",
                "type": "function",
                "function": {"name": "get_weather", "arguments": ""},
            }
        ]
    }
    fragments = [d["tool_calls"][0]["function"]["arguments"] for d in deltas[2:-1]]
    assert len(fragments) > 2
    assert "".join(fragments) == ARGS
    later = [{"tool_calls": [{"index": 0, "function": {"arguments": f}}]} for f in fragments]
    assert deltas[2:-1] == later
    assert deltas[-1] == {}
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-2]] == [None] * (len(chunks) - 2)
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] > 0


def test_stream_with_text_before_the_call_parses_in_the_sdk(
    up: FakeOpenAIUpstream, client: openai.OpenAI
) -> None:
    up.enqueue(ToolCall("get_weather", ARGS, text="Let me look that up."))
    text, args, names, finish = "", "", [], []
    for chunk in client.chat.completions.create(**CHAT, stream=True):
        delta = chunk.choices[0].delta
        text += delta.content or ""
        for call in delta.tool_calls or []:
            assert call.function is not None
            args += call.function.arguments or ""
            if call.function.name:
                names.append(call.function.name)
        finish.append(chunk.choices[0].finish_reason)
    assert (text, args, names) == ("Let me look that up.", ARGS, ["get_weather"])
    assert finish[-1] == "tool_calls"
    assert set(finish[:-1]) == {None}


def test_tool_call_answers_chat_only(up: FakeOpenAIUpstream) -> None:
    up.enqueue(ToolCall("get_weather", ARGS))
    r = httpx.post(f"{up.base_url}/completions", json={"model": "gpt-4o-mini", "prompt": "x"})
    assert r.status_code == 400
    assert "ToolCall" in r.json()["error"]["message"]


def test_echo_reports_the_tool_output_that_ends_the_conversation(
    up: FakeOpenAIUpstream, client: openai.OpenAI
) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages: list[Any] = [
        *CHAT["messages"],
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21C"},
    ]
    up.enqueue(Ok(), Ok())
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert answer.choices[0].message.content == "echo: sunny, 21C"
    messages.append({"role": "user", "content": "thanks"})
    answer = client.chat.completions.create(model="gpt-4o-mini", messages=messages)
    assert answer.choices[0].message.content == "echo: thanks"
