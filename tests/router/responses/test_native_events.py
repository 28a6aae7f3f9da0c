"""router/responses/native.py on recorded JSON: the request a native deployment gets, and
its stream made Turnout's (ids, numbering, the final event held until `finish`); every
event checked against the SDK's models."""

from __future__ import annotations

import json
from typing import Any

from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from router.responses.native import NativeEvents, chunk_usage, native_request, own_response
from tests.fakes.responses_wire import responses

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
OWN = {"id": "resp_turnout", "created_at": 7, "previous_response_id": "resp_before", "store": True}


def upstream_events(text: str = "hi there") -> list[dict[str, Any]]:
    """A recorded native stream, its sequence numbers shifted (Turnout renumbers them)."""
    payloads = responses({"model": "up", "input": text, "stream": True}, None)
    assert isinstance(payloads, list)
    events = [json.loads(p) for p in payloads]
    return [{**e, "sequence_number": e["sequence_number"] + 40} for e in events]


def skeleton() -> dict[str, Any]:
    return {**upstream_events()[0]["response"], **OWN}


def test_the_native_request_is_the_clients_with_the_history_in_input() -> None:
    request = {
        "model": "m",
        "input": "again",
        "previous_response_id": "resp_before",
        "router": {"strategy": "priority"},
        "fallbacks": ["x"],
        "cache": {"ttl": 5},
        "tools": [{"type": "web_search"}],
        "store": True,
    }
    history: list[dict[str, Any]] = [
        {"id": "msg_1", "type": "message", "role": "user", "content": "hi", "status": "completed"},
        {
            "id": "msg_2",
            "type": "message",
            "role": "assistant",
            "content": [],
            "status": "completed",
        },
        {"id": "fc_1", "type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
    ]
    items = [{"id": "msg_3", "type": "message", "role": "user", "content": "again"}]

    body = native_request(request, history, items)

    assert body == {
        "model": "m",
        "tools": [{"type": "web_search"}],
        "store": False,
        "input": [
            {"type": "message", "role": "user", "content": "hi", "status": "completed"},
            history[1],  # output messages keep their id
            history[2],
            {"type": "message", "role": "user", "content": "again"},
        ],
    }
    assert "id" in history[0]  # the stored items are not changed


def test_a_native_stream_gets_turnouts_id_and_numbering() -> None:
    native = NativeEvents(skeleton(), OWN)
    out: list[dict[str, Any]] = list(native.start())
    for event in upstream_events():
        out += native.on_chunk(event)

    assert out[-1]["type"] == "response.output_item.done"  # the final event is held back
    kept = native.response
    assert kept["status"] == "completed"
    assert kept["id"] == "resp_turnout"
    out += native.finish(completed_at=9)

    assert [e["sequence_number"] for e in out] == list(range(len(out)))
    assert out[-1]["type"] == "response.completed"
    for event in out:
        EVENTS.validate_python(event)
        if "response" in event:
            assert {k: event["response"][k] for k in OWN} == OWN
    assert out[-1]["response"]["output"][0]["content"][0]["text"] == "echo: hi there"


def test_a_failure_is_response_failed_in_the_same_sequence() -> None:
    native = NativeEvents(skeleton(), OWN)
    out = [e for event in upstream_events()[:4] for e in native.on_chunk(event)]
    out += native.fail({"error": {"message": "upstream cut", "type": "server_error"}})

    assert [e["sequence_number"] for e in out] == [0, 1, 2, 3, 4]
    failed = out[-1]
    EVENTS.validate_python(failed)
    assert failed["type"] == "response.failed"
    assert failed["response"]["id"] == "resp_turnout"
    assert failed["response"]["error"] == {"code": "server_error", "message": "upstream cut"}
    assert native.finish() == []
    assert native.fail({"message": "again"}) == []


def test_usage_is_read_in_chats_terms_from_the_final_event() -> None:
    completed = upstream_events()[-1]
    usage = completed["response"]["usage"]

    assert chunk_usage(completed) == {
        "prompt_tokens": usage["input_tokens"],
        "completion_tokens": usage["output_tokens"],
        "total_tokens": usage["total_tokens"],
    }
    assert chunk_usage(upstream_events()[0]) is None
    assert chunk_usage({"usage": {"total_tokens": 3}, "choices": []}) == {"total_tokens": 3}


def test_a_whole_answer_keeps_everything_but_turnouts_own_fields() -> None:
    whole = responses({"model": "up", "input": "x"}, None)
    assert isinstance(whole, dict)
    mine = own_response(whole, OWN)
    Response.model_validate(mine)
    assert {k: mine[k] for k in OWN} == OWN
    assert {k: v for k, v in mine.items() if k not in OWN} == {
        k: v for k, v in whole.items() if k not in OWN
    }
