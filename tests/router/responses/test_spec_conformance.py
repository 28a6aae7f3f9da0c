"""The Responses door's answers against OpenAI's own OpenAPI description (the vendored
subset, tests/openapi/): every Response a running Turnout answers over a chat-only fake
upstream (text, a function call, one cut by `max_output_tokens`, a retrieved one), every
event of a text stream and of a tool-call stream, input item lists (whole and paged), the
answer to a delete, and every error, which must be the spec's `ErrorResponse`. Each is a
valid JSON Schema instance of the spec's schema, has no top-level field the spec does not
name, and parses with the official SDK's typed models (tests/router/responses/spec_checks.py).

Streams that end `response.incomplete` or `response.failed`, and refusals, which the fake
cannot make the backend say, are checked on the stream state machine itself, fed recorded
chat chunks; broken streams end to end are in test_stream_failures.py."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from router.responses.events import ResponseEvents
from router.responses.from_chat import response_object
from tests.fakes.behaviors import Status, ToolCall
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.router.responses.spec_checks import (
    conforms,
    error_conforms,
    event_conforms,
    response_conforms,
    sse_events,
)
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
KEYS = {"a": "sk-spec-responses-a", "b": "sk-spec-responses-b"}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
#: The answer to `DELETE /responses/{id}`, which the spec leaves undescribed (its 200 has no
#: content): as OpenAI's API reference shows it.
DELETED: dict[str, Any] = {
    "type": "object",
    "required": ["id", "object", "deleted"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string"},
        "object": {"const": "response"},
        "deleted": {"const": True},
    },
}
#: A conversation with every kind of input item the door takes.
ITEMS: list[dict[str, Any]] = [
    {"role": "system", "content": "Answer briefly."},
    {
        "type": "message",
        "role": "user",
        "content": [
            {"type": "input_text", "text": "What is in this picture, and the weather?"},
            {"type": "input_image", "image_url": "https://example.com/cat.png"},
        ],
    },
    {"role": "assistant", "content": "A cat. Let me look up the weather."},
    {
        "type": "function_call",
        "call_id": "call_weather_1",
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
    },
    {"type": "function_call_output", "call_id": "call_weather_1", "output": "sunny, 21 C"},
    {"role": "developer", "content": [{"type": "input_text", "text": "Use Celsius."}]},
]


@pytest.fixture
def server(turnout: StartTurnout, upstream: FakeOpenAIUpstream) -> RunningTurnout:
    teams = {name: {"keys": [key]} for name, key in KEYS.items()}
    return turnout(simple_config({"up": upstream.base_url}, teams=teams))


@pytest.fixture
def http(server: RunningTurnout) -> httpx.Client:
    return server.http(headers={"authorization": f"Bearer {KEYS['a']}"})


def created(http: httpx.Client, **body: Any) -> dict[str, Any]:
    """A whole Response that conforms to the spec."""
    answer = http.post("/v1/responses", json={"model": "m", **body})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    response: dict[str, Any] = answer.json()
    response_conforms(response)
    return response


def streamed(http: httpx.Client, **body: Any) -> list[dict[str, Any]]:
    """Every event of a stream, each conforming to the spec."""
    with http.stream("POST", "/v1/responses", json={"model": "m", "stream": True, **body}) as s:
        assert s.status_code == 200, s.read()
        events = sse_events(s)
    for event in events:
        event_conforms(event)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    return events


# ---- whole Responses ------------------------------------------------------------------------


def test_a_text_response_and_its_retrieval_match_the_spec(http: httpx.Client) -> None:
    response = created(
        http,
        input=ITEMS,
        instructions="Be kind.",
        tools=[WEATHER],
        tool_choice="auto",
        metadata={"session": "s1"},
        user="user-1",
        temperature=0.2,
        top_p=0.9,
        max_output_tokens=64,
        text={"format": {"type": "json_object"}, "verbosity": "low"},
        reasoning={"effort": "low"},
        parallel_tool_calls=False,
    )
    assert response["status"] == "completed"
    assert [item["type"] for item in response["output"]] == ["message"]
    assert response["output"][0]["content"][0]["text"].startswith("echo: ")
    assert response["usage"]["total_tokens"] > 0

    again = http.get(f"/v1/responses/{response['id']}")
    assert again.status_code == 200, again.text
    response_conforms(again.json())
    assert again.json() == response


def test_a_function_call_response_matches_the_spec(
    http: httpx.Client, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(ToolCall("get_weather", '{"city": "Paris"}', call_id="call_1", text="Hm."))
    response = created(http, input="Weather in Paris?", tools=[WEATHER])
    assert [item["type"] for item in response["output"]] == ["message", "function_call"]
    call = response["output"][1]
    assert (call["call_id"], call["name"], call["arguments"]) == (
        "call_1",
        "get_weather",
        '{"city": "Paris"}',
    )


def test_a_response_cut_by_max_output_tokens_matches_the_spec(
    http: httpx.Client, upstream: FakeOpenAIUpstream
) -> None:
    # The fake does not count tokens: it answers as a backend whose answer ran out of them.
    choice = {
        "index": 0,
        "message": {"role": "assistant", "content": "The first words of"},
        "logprobs": None,
        "finish_reason": "length",
    }
    cut = {
        "id": "chatcmpl-cut",
        "object": "chat.completion",
        "created": 1,
        "model": "up-model",
        "choices": [choice],
        "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
    }
    upstream.enqueue(Status(200, body=json.dumps(cut).encode()))
    response = created(http, input="Tell me a long story.", max_output_tokens=4)
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete"
    assert response["max_output_tokens"] == 4


# ---- streams --------------------------------------------------------------------------------


def test_every_event_of_a_text_stream_matches_the_spec(http: httpx.Client) -> None:
    events = streamed(http, input="stream me please", instructions="Be brief.")
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == "echo: stream me please"
    assert "response.output_text.delta" in [e["type"] for e in events]


def test_every_event_of_a_tool_call_stream_matches_the_spec(
    http: httpx.Client, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(ToolCall("get_weather", '{"city": "Paris", "unit": "C"}', text="Let me see."))
    events = streamed(http, input="Weather in Paris?", tools=[WEATHER])
    types = [e["type"] for e in events]
    assert "response.function_call_arguments.delta" in types
    assert "response.function_call_arguments.done" in types
    final = events[-1]["response"]
    assert events[-1]["type"] == "response.completed"
    assert final["output"][-1]["arguments"] == '{"city": "Paris", "unit": "C"}'


def _chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return {"id": "c", "object": "chat.completion.chunk", "model": "up", "choices": [choice]}


def _machine() -> ResponseEvents:
    return ResponseEvents("resp_spec", {"model": "m", "input": "hi"}, created_at=1)


def test_incomplete_failed_and_refusal_events_match_the_spec() -> None:
    cut = _machine()
    events = cut.start() + cut.on_chunk(_chunk({"role": "assistant", "content": "Once"}))
    events += cut.on_chunk(_chunk({"content": " upon"}, finish="length"))
    events += cut.finish(completed_at=2)
    assert events[-1]["type"] == "response.incomplete"

    failed = _machine()
    broken = failed.start() + failed.on_chunk(_chunk({"content": "Half"}))
    broken += failed.fail({"error": {"message": "upstream broke", "type": "server_error"}})
    assert broken[-1]["type"] == "response.failed"

    refusal = _machine()
    refused = refusal.start() + refusal.on_chunk(_chunk({"refusal": "I can't help with that."}))
    refused += refusal.finish(completed_at=2)
    assert "response.refusal.done" in [e["type"] for e in refused]

    for event in events + broken + refused:
        event_conforms(event)


def test_logprobs_parallel_calls_usage_details_and_echoed_options_match_the_spec() -> None:
    """What the fake never says (logprobs, two calls, usage details), whole and streamed,
    with every option a Response echoes set."""
    logprobs = {
        "content": [
            {
                "token": "Hi",
                "logprob": -0.1,
                "bytes": [72, 105],
                "top_logprobs": [
                    {"token": "Hi", "logprob": -0.1, "bytes": [72, 105]},
                    {"token": "Yo", "logprob": -2.0, "bytes": None},
                ],
            }
        ]
    }
    usage = {
        "prompt_tokens": 3,
        "completion_tokens": 9,
        "total_tokens": 12,
        "prompt_tokens_details": {"cached_tokens": 1},
        "completion_tokens_details": {"reasoning_tokens": 2},
    }
    calls: list[dict[str, Any]] = [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
        {"id": "call_2", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}},
    ]
    request = {
        "model": "m",
        "input": "hi",
        "top_logprobs": 2,
        "tools": [{"type": "function", "name": "f"}],
        "tool_choice": "required",
        "reasoning": {"effort": "high", "summary": "auto"},
        "text": {"format": {"type": "json_object"}},
        "user": "u",
        "service_tier": "flex",
        "max_tool_calls": 3,
        "prompt_cache_key": "k",
        "safety_identifier": "s",
    }
    message = {"role": "assistant", "content": "Hi", "tool_calls": calls}
    choice = {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": "tool_calls"}
    chat = {"object": "chat.completion", "model": "up", "choices": [choice], "usage": usage}
    response_conforms(
        response_object("resp_1", request, chat, created_at=1, previous_response_id="resp_0")
    )

    machine = ResponseEvents("resp_1", request, created_at=1, previous_response_id="resp_0")
    events = machine.start()
    text = _chunk({"role": "assistant", "content": "Hi"})
    text["choices"][0]["logprobs"] = logprobs
    events += machine.on_chunk(text)
    for index, call in enumerate(calls):
        head = {**call, "index": index, "function": {"name": "f", "arguments": ""}}
        events += machine.on_chunk(_chunk({"tool_calls": [head]}))
        fragment = {"index": index, "function": {"arguments": call["function"]["arguments"]}}
        events += machine.on_chunk(_chunk({"tool_calls": [fragment]}))
    events += machine.on_chunk(_chunk({}, finish="tool_calls"))
    events += machine.on_chunk({"object": "chat.completion.chunk", "choices": [], "usage": usage})
    events += machine.finish(completed_at=2)
    for event in events:
        event_conforms(event)
    assert [item["type"] for item in events[-1]["response"]["output"]] == [
        "message",
        "function_call",
        "function_call",
    ]


# ---- input items, delete --------------------------------------------------------------------


def test_input_item_lists_match_the_spec(http: httpx.Client) -> None:
    response = created(http, input=ITEMS)
    url = f"/v1/responses/{response['id']}/input_items"

    whole = http.get(url)
    assert whole.status_code == 200, whole.text
    conforms("ResponseItemList", whole.json())
    kinds = [item["type"] for item in whole.json()["data"]]  # newest first
    assert kinds == [item.get("type", "message") for item in reversed(ITEMS)]

    first = http.get(url, params={"limit": 2, "order": "asc"}).json()
    conforms("ResponseItemList", first)
    assert first["has_more"] is True
    rest = http.get(url, params={"limit": 100, "order": "asc", "after": first["last_id"]}).json()
    conforms("ResponseItemList", rest)
    assert rest["has_more"] is False
    assert [i["id"] for i in first["data"] + rest["data"]] == [
        i["id"] for i in reversed(whole.json()["data"])
    ]


def test_an_empty_page_of_input_items_matches_the_spec(http: httpx.Client) -> None:
    response = created(http, input="only one item")
    url = f"/v1/responses/{response['id']}/input_items"
    last = http.get(url).json()["last_id"]
    empty = http.get(url, params={"after": last})
    assert empty.status_code == 200, empty.text
    assert empty.json()["data"] == []
    conforms("ResponseItemList", empty.json())


def test_the_delete_answer_is_the_one_openai_documents(http: httpx.Client) -> None:
    response = created(http, input="delete me")
    deleted = http.delete(f"/v1/responses/{response['id']}")
    assert deleted.status_code == 200, deleted.text
    problems = [e.message for e in Draft202012Validator(DELETED).iter_errors(deleted.json())]
    assert problems == []
    assert deleted.json()["id"] == response["id"]
    error_conforms(http.get(f"/v1/responses/{response['id']}"), 404)


# ---- errors ---------------------------------------------------------------------------------

REFUSALS: list[tuple[str, str, dict[str, Any] | None, int, str | None]] = [
    ("POST", "/v1/responses", {"model": "m"}, 400, "input"),
    ("POST", "/v1/responses", {"input": "hi"}, 400, "model"),
    ("POST", "/v1/responses", {"model": "m", "input": [{"type": "telepathy"}]}, 400, None),
    ("POST", "/v1/responses", {"model": "m", "input": "hi", "temperature": 9}, 400, "temperature"),
    ("POST", "/v1/responses", {"model": "m", "input": "hi", "background": True}, 400, None),
    ("POST", "/v1/responses", {"model": "m", "input": "hi", "tools": [{"type": "web_search"}]},
     400, "tools[0].type"),
    ("POST", "/v1/responses", {"model": "nope", "input": "hi"}, 404, "model"),
    ("POST", "/v1/responses", {"model": "m", "input": "hi", "previous_response_id": "resp_gone"},
     404, "previous_response_id"),
    ("GET", "/v1/responses/resp_gone", None, 404, "response_id"),
    ("DELETE", "/v1/responses/resp_gone", None, 404, "response_id"),
    ("GET", "/v1/responses/resp_gone/input_items", None, 404, "response_id"),
    ("POST", "/v1/responses/resp_gone/cancel", None, 404, "response_id"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "param"),
    REFUSALS,
    ids=[f"{m} {p} {s} {param}" for m, p, _, s, param in REFUSALS],
)
def test_every_refusal_is_the_spec_error_envelope(
    http: httpx.Client,
    method: str,
    path: str,
    body: dict[str, Any] | None,
    status: int,
    param: str | None,
) -> None:
    error = error_conforms(http.request(method, path, json=body), status)
    if param is not None:
        assert error["error"]["param"] == param


def test_errors_about_a_stored_response_are_the_spec_envelope(
    server: RunningTurnout, http: httpx.Client
) -> None:
    response = created(http, input="mine")
    url = f"/v1/responses/{response['id']}"
    error_conforms(http.get(url, params={"stream": "true"}), 400)
    error_conforms(http.get(f"{url}/input_items", params={"limit": 0}), 400)
    error_conforms(http.get(f"{url}/input_items", params={"after": "msg_nope"}), 400)
    error_conforms(http.post(f"{url}/cancel"), 400)
    with server.http(headers={"authorization": f"Bearer {KEYS['b']}"}) as other:
        error_conforms(other.get(url), 404)  # another team's response
    with server.http(headers={"authorization": "Bearer sk-unknown"}) as stranger:
        error_conforms(stranger.post("/v1/responses", json={"model": "m", "input": "hi"}), 401)
        error_conforms(stranger.get(url), 401)


def test_upstream_errors_reach_the_client_as_the_spec_envelope(
    http: httpx.Client, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(Status(400, message="bad tool schema", param="tools"))
    error_conforms(http.post("/v1/responses", json={"model": "m", "input": "hi"}), 400)

    upstream.set_default(Status(503))  # every attempt, whole and streamed
    error_conforms(http.post("/v1/responses", json={"model": "m", "input": "hi"}), 503)
    body = {"model": "m", "input": "hi", "stream": True}
    with http.stream("POST", "/v1/responses", json=body) as refused:
        refused.read()
        error_conforms(refused, 503)
