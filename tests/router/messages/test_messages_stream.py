"""The Anthropic-shaped door's stream through a real Turnout in front of an
OpenAI-compatible fake: Anthropic's exact event sequence read off the wire (each event
checked against the `anthropic` SDK's event models, its SSE name equal to its `type`),
one block per text run and per tool call with indices in order, a tool call as a
`tool_use` block of `input_json_delta`s, and the SDK's own stream helpers on top."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import orjson
import pytest
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter

from tests.fakes.behaviors import ToolCall
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.router.messages.door import HI, KEY, VERSION, WEATHER, last_chat, sdk, start_door
from tests.turnout_server import RunningTurnout

EVENTS: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)


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


def wire_events(server: RunningTurnout, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The stream's events as they crossed the wire (the SDK drops `ping`), each checked
    against the SDK's own event models, its SSE name equal to its `type`."""
    events: list[dict[str, Any]] = []
    headers = {"x-api-key": KEY, **VERSION}
    with (
        server.http() as http,
        http.stream("POST", "/v1/messages", json={**body, "stream": True}, headers=headers) as r,
    ):
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["request-id"] == r.headers["x-request-id"]
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                event = orjson.loads(line.removeprefix("data: "))
                assert event["type"] == name
                if name == "ping":  # not among the SDK's event models: it drops them
                    assert event == {"type": "ping"}
                else:
                    EVENTS.validate_python(event)
                events.append(event)
    return events


def test_the_stream_helpers_give_the_text_and_the_final_message(
    client: anthropic.Anthropic,
) -> None:
    with client.messages.stream(
        model="m", max_tokens=50, messages=[{"role": "user", "content": "stream this"}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()

    assert "".join(pieces) == "echo: stream this"
    assert len(pieces) > 1  # it came in pieces, not in one delta at the end
    assert final.content[0].text == "echo: stream this"  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0
    assert final.model == "m"


def test_a_text_stream_is_anthropics_exact_event_sequence(server: RunningTurnout) -> None:
    events = wire_events(server, {"model": "m", "max_tokens": 50, "messages": HI})
    kinds = [e["type"] for e in events]

    deltas = kinds.count("content_block_delta")
    assert deltas >= 2
    assert kinds == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * deltas,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0]["message"]
    assert start["content"] == []
    assert start["stop_reason"] is None
    assert start["model"] == "m"
    block = {"type": "text", "text": ""}
    assert events[1] == {"type": "content_block_start", "index": 0, "content_block": block}
    texts = [e["delta"]["text"] for e in events if e["type"] == "content_block_delta"]
    assert {e["index"] for e in events if "index" in e} == {0}
    assert "".join(texts) == "echo: hi"
    end = events[-2]
    assert end["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert end["usage"]["output_tokens"] > 0


def test_a_streamed_tool_call_is_a_tool_use_block_of_json_deltas(
    server: RunningTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.reset()
    arguments = '{"city": "Paris", "unit": "celsius"}'
    upstream.enqueue(ToolCall("get_weather", arguments, call_id="call_w1", text="Checking."))
    body = {"model": "m", "max_tokens": 50, "messages": HI, "tools": [WEATHER]}
    events = wire_events(server, body)
    kinds = [(e["type"], e.get("index")) for e in events]

    text_deltas = sum(1 for e in events if e.get("delta", {}).get("type") == "text_delta")
    json_deltas = [e for e in events if e.get("delta", {}).get("type") == "input_json_delta"]
    assert kinds == [
        ("message_start", None),
        ("content_block_start", 0),
        ("ping", None),
        *[("content_block_delta", 0)] * text_deltas,
        ("content_block_stop", 0),
        ("content_block_start", 1),
        *[("content_block_delta", 1)] * len(json_deltas),
        ("content_block_stop", 1),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert len(json_deltas) > 1
    tool_start = events[3 + text_deltas + 1]["content_block"]
    assert tool_start == {"type": "tool_use", "id": "call_w1", "name": "get_weather", "input": {}}
    assert "".join(e["delta"]["partial_json"] for e in json_deltas) == arguments
    assert events[-2]["delta"]["stop_reason"] == "tool_use"
    sent = last_chat(upstream)
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER["input_schema"],
                "description": WEATHER["description"],
            },
        }
    ]


def test_a_streamed_tool_call_through_the_sdk(
    client: anthropic.Anthropic, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(ToolCall("get_weather", '{"city": "Oslo"}', call_id="call_w2"))
    with client.messages.stream(model="m", max_tokens=50, messages=HI, tools=[WEATHER]) as stream:
        snapshots = [e.snapshot for e in stream if e.type == "input_json"]
        final = stream.get_final_message()

    assert snapshots[-1] == {"city": "Oslo"}
    assert final.stop_reason == "tool_use"
    [call] = final.content
    assert call.type == "tool_use"
    assert (call.id, call.name, call.input) == ("call_w2", "get_weather", {"city": "Oslo"})
