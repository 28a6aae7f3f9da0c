"""The Responses door under review (R2): each test failed on the code before its fix.

- a stream whose turn cannot be stored at its end (the store is down) still ends with a
  terminal event (`response.failed`, saying the storage is unavailable), never a bare close;
- a native upstream's `response.failed` reaches the client masked as chat's errors are
  (no internal address, no key), and counts as the deployment's failure;
- a `/v1/responses` batch line that meets a store outage is held back and run again, not
  written as a crashed (500) line.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from policies.storage.base import StorageUnavailable
from policies.storage.response_store import ResponseRecord
from tests.fakes.behaviors import ToolCall
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Status
from tests.router.batches.batch_helpers import FAST, finished, read_lines
from tests.router.batches.batch_helpers import start_batch as start
from tests.router.responses.spec_checks import event_conforms, sse_events
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
INTERNAL = "10.20.30.40:8000"
SECRET = "sk-internal-0123456789abcdefXYZ"


def failing_puts(server: RunningTurnout, failures: int) -> list[ResponseRecord]:
    """The server's store refuses the next `failures` stored responses (an outage), then
    keeps them again; the records it kept are listed."""
    meta = server.app.state.storage.meta
    real = meta.put_response
    kept: list[ResponseRecord] = []
    left = [failures]

    async def put_response(record: ResponseRecord) -> None:
        if left[0] > 0:
            left[0] -= 1
            raise StorageUnavailable("sqlite: disk I/O error")
        await real(record)
        kept.append(record)

    meta.put_response = put_response
    return kept


def stream_events(server: RunningTurnout, **body: Any) -> list[dict[str, Any]]:
    request = {"model": "m", "input": "hello", "stream": True, **body}
    with server.http() as http, http.stream("POST", "/v1/responses", json=request) as answer:
        assert answer.status_code == 200, answer.read()
        return sse_events(answer)


def test_a_stream_whose_turn_cannot_be_stored_still_ends_with_a_terminal_event(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    server = turnout(simple_config({"up": upstream.base_url}))
    failing_puts(server, failures=1)

    events = stream_events(server)

    for event in events:
        event_conforms(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    last = events[-1]
    assert last["type"] == "response.failed"
    assert last["response"]["status"] == "failed"
    assert last["response"]["error"]["code"] == "server_error"  # the spec's enum has no other
    assert "storage is unavailable" in last["response"]["error"]["message"]
    assert "response.completed" not in [e["type"] for e in events]


def native_config(upstream: FakeOpenAIUpstream) -> dict[str, Any]:
    models = {
        "m": {
            "deployments": [
                {"provider": "up", "model": "native", "capabilities": {"responses": True}}
            ]
        }
    }
    return simple_config({"up": upstream.base_url}, models, retry={"attempts": 1})


def sse(*events: dict[str, Any]) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)


def upstream_response(status: str, error: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "id": "resp_upstream1",
        "object": "response",
        "created_at": 1,
        "status": status,
        "error": error,
        "model": "native",
        "output": [],
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
    }


def test_a_native_streams_failure_is_masked_as_chats_errors_are(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    said = f"backend {INTERNAL} refused key {SECRET}"
    upstream.enqueue(
        Status(
            200,
            body=sse(
                {"type": "response.created", "response": upstream_response("in_progress", None)},
                {
                    "type": "response.failed",
                    "response": upstream_response(
                        "failed", {"code": "server_error", "message": said}
                    ),
                },
            ),
            headers={"content-type": "text/event-stream"},
        )
    )
    server = turnout(native_config(upstream))

    events = stream_events(server)

    last = events[-1]
    assert last["type"] == "response.failed"
    assert last["response"]["status"] == "failed"
    assert not last["response"]["id"].startswith("resp_upstream")
    text = json.dumps(events)
    assert INTERNAL not in text
    assert SECRET not in text
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_a_responses_batch_line_that_meets_a_store_outage_is_run_again(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    server = turnout(simple_config({"up": upstream.base_url}, batches=FAST))
    line = {
        "custom_id": "r1",
        "method": "POST",
        "url": "/v1/responses",
        "body": {"model": "m", "input": "question"},
    }
    kept = failing_puts(server, failures=1)
    with server.client() as client:
        batch = finished(client, start(client, [line], "/v1/responses").id)

        assert batch.status == "completed"
        assert batch.request_counts is not None
        assert batch.request_counts.completed == 1, batch
        [row] = read_lines(client, batch.output_file_id)
        assert row["response"]["status_code"] == 200
        assert [record.id for record in kept] == [row["response"]["body"]["id"]]
        assert client.responses.retrieve(row["response"]["body"]["id"]).status == "completed"


WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def test_a_tool_round_trip_by_previous_response_id_does_not_carry_instructions_over(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    """As OpenAI: a follow-up's `instructions` are its own (the earlier turn's are not
    carried over), and a client may answer a call with only its `function_call_output`."""
    server = turnout(simple_config({"up": upstream.base_url}))
    upstream.enqueue(ToolCall("get_weather", '{"city": "Paris"}', call_id="call_1"))
    with server.client() as client:
        first = client.responses.create(
            model="m", input="weather in Paris?", instructions="Be brief.", tools=[WEATHER]
        )
        [call] = first.output
        assert call.type == "function_call"
        assert call.call_id == "call_1"
        second = client.responses.create(
            model="m",
            previous_response_id=first.id,
            input=[{"type": "function_call_output", "call_id": "call_1", "output": "sunny"}],
            tools=[WEATHER],
        )

    assert second.instructions is None
    chats = [r.json for r in upstream.requests if r.path.endswith("/chat/completions")]
    assert chats[0]["messages"][0] == {"role": "system", "content": "Be brief."}
    messages = chats[1]["messages"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool"]  # no system
    assert messages[1]["tool_calls"][0]["id"] == "call_1"
    assert messages[2] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
