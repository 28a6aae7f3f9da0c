"""Chat chunks → Anthropic's stream events (router/messages/events.py): the exact event
order, one block per text run and per tool call, indices in order, stop reasons and
cumulative usage in `message_delta`, `error` on failure. Every event is validated with
the anthropic SDK's `RawMessageStreamEvent`; whole streams are framed with `sse` and read
by the SDK's own `messages.stream` (over a mock transport), whose accumulated final
message must equal the state machine's `message`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from router.messages.events import MessageEvents, sse
from router.messages.from_chat import message_object

EVENT = TypeAdapter(RawMessageStreamEvent)


def chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, **choice: Any
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "backend",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish, **choice}],
    }


def usage_chunk(prompt: int, completion: int, cached: int = 0) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "backend",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached},
        },
    }


def call(
    index: int, call_id: str | None = None, name: str | None = None, arguments: str = ""
) -> dict[str, Any]:
    function: dict[str, Any] = {"arguments": arguments}
    if name is not None:
        function["name"] = name
    fragment: dict[str, Any] = {"index": index, "function": function}
    if call_id is not None:
        fragment.update(id=call_id, type="function")
    return fragment


def run(
    chunks: Iterable[dict[str, Any]], **options: Any
) -> tuple[list[dict[str, Any]], MessageEvents]:
    events = MessageEvents("msg_1", model="claude-x", **options)
    out = events.start()
    for piece in chunks:
        out += events.on_chunk(piece)
    out += events.finish()
    for event in out:
        if event["type"] not in ("ping", "error"):
            EVENT.validate_python(event)
    return out, events


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def sdk_final(events: list[dict[str, Any]]) -> Message:
    """The stream read by the anthropic SDK's own `messages.stream` helper."""
    body = b"".join(sse(event) for event in events)

    def handler(_: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})

    client = anthropic.Anthropic(
        api_key="k",
        base_url="http://turnout.test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    with client.messages.stream(
        model="claude-x", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        for _ in stream:
            pass
        return stream.get_final_message()


TEXT_STREAM = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Hel"}),
    chunk({"content": "lo"}),
    chunk({}, "stop"),
    usage_chunk(12, 3),
]


def test_a_text_stream_is_anthropics_exact_event_sequence() -> None:
    events, machine = run(TEXT_STREAM)
    assert events == [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude-x",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": 0,
                    "output_tokens": 0,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                },
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "ping"},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {
                "input_tokens": 12,
                "output_tokens": 3,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        },
        {"type": "message_stop"},
    ]
    final = sdk_final(events)
    assert final.model_dump(exclude_none=True) == Message.model_validate(
        machine.message
    ).model_dump(exclude_none=True)
    assert final.content[0].type == "text"
    assert final.content[0].text == "Hello"
    assert final.usage.input_tokens == 12
    assert final.usage.output_tokens == 3


def test_the_streamed_message_equals_the_whole_answers_mapping() -> None:
    _, machine = run(TEXT_STREAM)
    whole = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello"},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
    }
    assert machine.message == message_object("msg_1", whole, model="claude-x")


def test_text_then_tool_calls_are_one_block_each_in_order() -> None:
    chunks = [
        chunk({"role": "assistant", "content": "Let me check."}),
        chunk({"tool_calls": [call(0, "call_a", "get_weather", "")]}),
        chunk({"tool_calls": [call(0, arguments='{"city": ')]}),
        chunk({"tool_calls": [call(0, arguments='"Paris"}')]}),
        chunk({"tool_calls": [call(1, "call_b", "get_time", '{"tz": "CET"}')]}),
        chunk({}, "tool_calls"),
        usage_chunk(40, 25, cached=30),
    ]
    events, machine = run(chunks)
    assert kinds(events) == [
        "message_start",
        "content_block_start",
        "ping",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [e["index"] for e in starts] == [0, 1, 2]
    assert starts[1]["content_block"] == {
        "type": "tool_use",
        "id": "call_a",
        "name": "get_weather",
        "input": {},
    }
    deltas = [e["delta"] for e in events if e["type"] == "content_block_delta" and e["index"] == 1]
    assert deltas == [
        {"type": "input_json_delta", "partial_json": '{"city": '},
        {"type": "input_json_delta", "partial_json": '"Paris"}'},
    ]
    assert events[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert events[-2]["usage"]["cache_read_input_tokens"] == 30
    assert events[-2]["usage"]["input_tokens"] == 10
    final = sdk_final(events)
    assert [(b.type, getattr(b, "input", None)) for b in final.content] == [
        ("text", None),
        ("tool_use", {"city": "Paris"}),
        ("tool_use", {"tz": "CET"}),
    ]
    assert final.stop_reason == "tool_use"
    assert final.usage.cache_read_input_tokens == 30
    assert final.model_dump(exclude_none=True) == Message.model_validate(
        machine.message
    ).model_dump(exclude_none=True)


def test_text_after_a_tool_call_is_a_new_block() -> None:
    chunks = [
        chunk({"content": "a"}),
        chunk({"tool_calls": [call(0, "c", "f", "{}")]}),
        chunk({"content": "b"}),
        chunk({}, "stop"),
    ]
    events, machine = run(chunks)
    starts = [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"]
    assert starts == ["text", "tool_use", "text"]
    assert [b["type"] for b in machine.message["content"]] == ["text", "tool_use", "text"]
    assert kinds(events).count("content_block_stop") == 3


def test_a_call_whose_name_comes_late_is_opened_with_its_held_arguments() -> None:
    chunks = [
        chunk({"tool_calls": [call(0, "c1", None, '{"q"')]}),
        chunk({"tool_calls": [call(0, name="search", arguments=': "x"}')]}),
        chunk({"tool_calls": [call(1, "c2", None, "{}")]}),  # its name never comes
        chunk({}, "tool_calls"),
    ]
    events, machine = run(chunks)
    starts = [e for e in events if e["type"] == "content_block_start"]
    assert [(e["index"], e["content_block"]["name"]) for e in starts] == [(0, "search"), (1, "")]
    first = [e["delta"] for e in events if e["type"] == "content_block_delta" and e["index"] == 0]
    assert first == [{"type": "input_json_delta", "partial_json": '{"q": "x"}'}]
    assert machine.message["content"][0]["input"] == {"q": "x"}
    sdk_final(events)


def test_calls_without_an_index_continue_the_open_call_unless_a_new_id_comes() -> None:
    def bare(call_id: str | None, name: str | None, arguments: str) -> dict[str, Any]:
        fragment = call(0, call_id, name, arguments)
        del fragment["index"]
        return fragment

    chunks = [
        chunk({"tool_calls": [bare("c1", "f", '{"a":')]}),
        chunk({"tool_calls": [bare(None, None, "1}")]}),
        chunk({"tool_calls": [bare("c2", "g", "{}")]}),
        chunk({}, "tool_calls"),
    ]
    _, machine = run(chunks)
    assert [(b["id"], b["input"]) for b in machine.message["content"]] == [
        ("c1", {"a": 1}),
        ("c2", {}),
    ]


@pytest.mark.parametrize(
    ("finish", "reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_finish_reasons_become_the_message_deltas_stop_reason(
    finish: str | None, reason: str
) -> None:
    events, machine = run([chunk({"content": "x"}), chunk({}, finish)])
    assert events[-2]["delta"]["stop_reason"] == reason
    assert machine.message["stop_reason"] == reason


def test_a_matched_stop_sequence_is_reported_when_the_backend_names_it() -> None:
    chunks = [chunk({"content": "x"}), chunk({}, "stop", stop_reason="END")]
    events, _ = run(chunks, stop_sequences=["END"])
    assert events[-2]["delta"] == {"stop_reason": "stop_sequence", "stop_sequence": "END"}
    assert sdk_final(events).stop_sequence == "END"
    events, _ = run(chunks)
    assert events[-2]["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}


def test_a_refusal_delta_is_text_and_stops_as_refusal() -> None:
    events, machine = run([chunk({"refusal": "No."}), chunk({}, "stop")])
    assert machine.message["content"] == [{"type": "text", "text": "No."}]
    assert events[-2]["delta"]["stop_reason"] == "refusal"


def test_input_tokens_known_at_the_start_stay_when_no_usage_comes() -> None:
    events, machine = run([chunk({"content": "x"}), chunk({}, "stop")], input_tokens=42)
    assert events[0]["message"]["usage"]["input_tokens"] == 42
    assert events[-2]["usage"] == {"output_tokens": 0}
    assert machine.message["usage"]["input_tokens"] == 42
    assert sdk_final(events).usage.input_tokens == 42


def test_an_empty_answer_still_pings_and_ends() -> None:
    events, machine = run([chunk({}, "stop")])
    assert kinds(events) == ["message_start", "ping", "message_delta", "message_stop"]
    assert machine.message["content"] == []
    assert sdk_final(events).content == []


def test_other_choices_and_reasoning_are_left_out() -> None:
    other = chunk({"content": "other"})
    other["choices"][0]["index"] = 1
    _, machine = run(
        [other, chunk({"reasoning_content": "hmm", "content": "x"}), chunk({}, "stop")]
    )
    assert machine.message["content"] == [{"type": "text", "text": "x"}]


def test_finish_without_start_opens_the_stream_first_and_ends_once() -> None:
    machine = MessageEvents("msg_1", model="claude-x")
    events = machine.finish()
    assert kinds(events) == ["message_start", "ping", "message_delta", "message_stop"]
    assert machine.finish() == []
    assert machine.on_chunk(chunk({"content": "late"})) == []
    assert machine.fail({"message": "x", "type": "server_error"}) == []


def test_a_failure_is_one_error_event_and_the_sdk_raises_it() -> None:
    machine = MessageEvents("msg_1", model="claude-x")
    events = [*machine.start(), *machine.on_chunk(chunk({"content": "partial"}))]
    failed = machine.fail(
        {"error": {"message": "Backend overloaded", "type": "service_unavailable"}}
    )
    assert failed == [
        {"type": "error", "error": {"type": "overloaded_error", "message": "Backend overloaded"}}
    ]
    assert machine.finish() == []
    with pytest.raises(anthropic.APIStatusError) as caught:
        sdk_final(events + failed)
    assert caught.value.body == failed[0]
    assert machine.message["content"] == [{"type": "text", "text": "partial"}]


def test_sse_frames_are_named_events() -> None:
    assert sse({"type": "ping"}) == b'event: ping\ndata: {"type":"ping"}\n\n'
