"""Chat completion chunk streams → Responses stream events (router/responses/events.py), on
recorded chunk streams: the event order, one `sequence_number` after another, the same ids
from the first event to the last, and every event checked against the SDK's models."""

from __future__ import annotations

from typing import Any

import orjson
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from router.responses.events import ResponseEvents, sse
from router.responses.from_chat import response_object

EVENT = TypeAdapter(ResponseStreamEvent)
REQUEST: dict[str, Any] = {"model": "gpt-4o-mini", "input": "hi", "stream": True}
USAGE = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}


def chunk(delta: dict[str, Any], finish: str | None = None, **choice: Any) -> dict[str, Any]:
    """A `chat.completion.chunk` as OpenAI streams it (with `include_usage`)."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish, **choice}
        ],
        "usage": None,
    }


def usage_chunk() -> dict[str, Any]:
    return {**chunk({}), "choices": [], "usage": USAGE}


def call(
    index: int, call_id: str | None = None, name: str | None = None, args: str = ""
) -> dict[str, Any]:
    delta: dict[str, Any] = {"index": index, "function": {"arguments": args}}
    if call_id is not None:
        delta.update(id=call_id, type="function")
        delta["function"]["name"] = name
    return {"tool_calls": [delta]}


TEXT_STREAM = [
    chunk({"role": "assistant", "content": "", "refusal": None}),
    chunk({"content": "Hel"}),
    chunk({"content": "lo!"}),
    chunk({}, "stop"),
    usage_chunk(),
]
CALLS_STREAM = [
    chunk({"role": "assistant", "content": "Checking."}),
    chunk(call(0, "call_a", "weather")),
    chunk(call(0, args='{"city":')),
    chunk(call(0, args='"Paris"}')),
    chunk(call(1, "call_b", "time", "{}")),
    chunk({}, "tool_calls"),
    usage_chunk(),
]


def run(
    chunks: list[dict[str, Any]], **request: Any
) -> tuple[list[dict[str, Any]], ResponseEvents]:
    events = ResponseEvents(
        "resp_1", {**REQUEST, **request}, created_at=1700000001, previous_response_id="resp_0"
    )
    out = events.start()
    for piece in chunks:
        out += events.on_chunk(piece)
    out += events.finish(completed_at=1700000002)
    check(out)
    return out, events


def check(events: list[dict[str, Any]]) -> None:
    """Valid SDK events, numbered 0, 1, 2 ..., one response id throughout, and each item
    keeping its id and output index from `added` to `done`."""
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    for event in events:
        EVENT.validate_python(event)
    assert {event["response"]["id"] for event in events if "response" in event} == {"resp_1"}
    items: dict[int, str] = {}
    for event in events:
        if event["type"] == "response.output_item.added":
            items[event["output_index"]] = event["item"]["id"]
        elif "item_id" in event:
            assert items[event["output_index"]] == event["item_id"]
        elif event["type"] == "response.output_item.done":
            assert items[event["output_index"]] == event["item"]["id"]


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def test_a_streamed_text_answer() -> None:
    events, machine = run(TEXT_STREAM)
    assert types(events) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    created, in_progress = events[0]["response"], events[1]["response"]
    assert created["status"] == in_progress["status"] == "in_progress"
    assert created["output"] == []
    assert "usage" not in created
    assert created["previous_response_id"] == "resp_0"
    added = events[2]
    assert added["item"] == {
        "id": added["item"]["id"],
        "type": "message",
        "role": "assistant",
        "status": "in_progress",
        "content": [],
    }
    assert events[3]["part"] == {
        "type": "output_text",
        "text": "",
        "annotations": [],
        "logprobs": [],
    }
    assert [e["delta"] for e in events[4:6]] == ["Hel", "lo!"]
    assert events[4]["logprobs"] == []
    assert events[4]["content_index"] == 0
    assert events[6]["text"] == "Hello!"
    assert events[7]["part"]["text"] == "Hello!"
    assert events[8]["item"]["status"] == "completed"
    final = events[-1]["response"]
    assert final["status"] == "completed"
    assert final["completed_at"] == 1700000002
    assert final["model"] == "gpt-4o-mini-2024-07-18"
    assert final["output"] == [events[8]["item"]]
    assert final["usage"]["input_tokens"] == 9
    assert final["usage"]["output_tokens"] == 4
    assert Response.model_validate(final).output_text == "Hello!"
    assert machine.response == final


def test_text_then_tool_calls() -> None:
    events, _ = run(CALLS_STREAM)
    assert types(events)[2:] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    first_call = events[8]["item"]
    assert first_call == {
        "id": first_call["id"],
        "type": "function_call",
        "call_id": "call_a",
        "name": "weather",
        "arguments": "",
        "status": "in_progress",
    }
    assert (events[8]["output_index"], events[14]["output_index"]) == (1, 2)
    assert events[11]["arguments"] == '{"city":"Paris"}'
    final = events[-1]["response"]
    assert [(i["type"], i.get("call_id"), i.get("arguments")) for i in final["output"]] == [
        ("message", None, None),
        ("function_call", "call_a", '{"city":"Paris"}'),
        ("function_call", "call_b", "{}"),
    ]
    assert {item["status"] for item in final["output"]} == {"completed"}


def test_a_stream_cut_by_the_token_limit_is_incomplete() -> None:
    events, _ = run([chunk({"content": "Once upon"}), chunk({}, "length"), usage_chunk()])
    assert types(events)[-2:] == ["response.output_item.done", "response.incomplete"]
    assert events[-2]["item"]["status"] == "incomplete"
    final = events[-1]["response"]
    assert final["status"] == "incomplete"
    assert final["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final.get("completed_at") is None


def test_a_failure_mid_stream_is_response_failed_with_the_items_as_they_were() -> None:
    machine = ResponseEvents("resp_1", REQUEST, created_at=1700000001)
    events = machine.start()
    events += machine.on_chunk(chunk({"content": "Hal"}))
    error = {
        "error": {"message": "upstream broke", "type": "api_error", "param": None, "code": None}
    }
    events += machine.fail(error)
    check(events)
    assert types(events)[-1] == "response.failed"
    failed = events[-1]["response"]
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "server_error", "message": "upstream broke"}
    [item] = failed["output"]
    assert item["status"] == "in_progress"
    assert item["content"][0]["text"] == "Hal"
    assert machine.finish() == []
    assert machine.on_chunk(chunk({"content": "more"})) == []


def test_a_streamed_refusal() -> None:
    events, _ = run(
        [chunk({"refusal": "I can't"}), chunk({"refusal": " help."}), chunk({}, "stop")]
    )
    assert types(events)[2:] == [
        "response.output_item.added",
        "response.content_part.added",
        "response.refusal.delta",
        "response.refusal.delta",
        "response.refusal.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert events[3]["part"] == {"type": "refusal", "refusal": ""}
    assert events[6]["refusal"] == "I can't help."
    assert events[-1]["response"]["output"][0]["content"] == [
        {"type": "refusal", "refusal": "I can't help."}
    ]


def test_streamed_logprobs() -> None:
    first = {"token": "Hi", "logprob": -0.5, "bytes": [72, 105], "top_logprobs": []}
    second = {
        "token": "!",
        "logprob": -0.1,
        "bytes": [33],
        "top_logprobs": [{"token": "!", "logprob": -0.1, "bytes": [33]}],
    }
    stream = [
        chunk({"content": "Hi"}, logprobs={"content": [first]}),
        chunk({"content": "!"}, logprobs={"content": [second]}),
        chunk({}, "stop"),
    ]
    events, _ = run(stream, top_logprobs=1)
    deltas = [event for event in events if event["type"] == "response.output_text.delta"]
    assert deltas[1]["logprobs"] == [
        {"token": "!", "logprob": -0.1, "top_logprobs": [{"token": "!", "logprob": -0.1}]}
    ]
    done = next(event for event in events if event["type"] == "response.output_text.done")
    assert [entry["token"] for entry in done["logprobs"]] == ["Hi", "!"]
    part = events[-1]["response"]["output"][0]["content"][0]
    assert part["logprobs"][0] == first


def test_tool_call_fragments_without_an_index_continue_the_open_call() -> None:
    stream = [
        chunk(
            {
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "f", "arguments": "{"},
                    }
                ]
            }
        ),
        chunk({"tool_calls": [{"function": {"arguments": "}"}}]}),
        chunk(
            {
                "tool_calls": [
                    {
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "g", "arguments": "{}"},
                    }
                ]
            }
        ),
        chunk({}, "tool_calls"),
    ]
    events, _ = run(stream)
    output = events[-1]["response"]["output"]
    assert [(item["call_id"], item["name"], item["arguments"]) for item in output] == [
        ("call_a", "f", "{}"),
        ("call_b", "g", "{}"),
    ]


def test_a_late_fragment_of_a_closed_call_still_reaches_the_response() -> None:
    stream = [
        chunk(call(0, "call_a", "f", "{")),
        chunk(call(1, "call_b", "g", "{}")),
        chunk(call(0, args="}")),
        chunk({}, "tool_calls"),
    ]
    events, _ = run(stream)
    assert events[-1]["response"]["output"][0]["arguments"] == "{}"


def test_an_empty_stream_completes_with_no_output() -> None:
    events, _ = run([chunk({}, "stop")])
    assert types(events) == ["response.created", "response.in_progress", "response.completed"]
    assert events[-1]["response"]["output"] == []


def test_the_streamed_response_is_the_whole_one() -> None:
    """The same answer, whole and streamed, is the same Response (but for fresh item ids)."""
    _, machine = run(CALLS_STREAM)
    calls = [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
        },
        {"id": "call_b", "type": "function", "function": {"name": "time", "arguments": "{}"}},
    ]
    whole = {
        **chunk({}),
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Checking.", "tool_calls": calls},
                "finish_reason": "tool_calls",
            }
        ],
        "usage": USAGE,
    }
    answer = response_object(
        "resp_1",
        REQUEST,
        whole,
        created_at=1700000001,
        previous_response_id="resp_0",
        completed_at=1700000002,
    )
    streamed = machine.response
    for item in [*streamed["output"], *answer["output"]]:
        del item["id"]
    assert streamed == answer


def test_sse_frames_are_named_events() -> None:
    events, _ = run(TEXT_STREAM)
    frame = sse(events[4])
    head, data = frame.split(b"\n", 1)
    assert head == b"event: response.output_text.delta"
    assert data.startswith(b"data: ")
    assert frame.endswith(b"\n\n")
    assert orjson.loads(data[len(b"data: ") :]) == events[4]
