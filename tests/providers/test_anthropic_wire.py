"""Golden translations between OpenAI's chat wire and Anthropic's Messages API, both ways,
on recorded JSON and without I/O."""

from __future__ import annotations

from typing import Any

import pytest

from providers.anthropic.errors import error_from_event, error_from_response
from providers.anthropic.stream import StreamTranslator
from providers.anthropic.wire import from_wire, to_wire
from providers.errors import Failure, UpstreamError

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}


def call(call_id: str, city: str) -> dict[str, Any]:
    arguments = f'{{"city": "{city}"}}'
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": "get_weather", "arguments": arguments},
    }


OPENAI_REQUEST: dict[str, Any] = {
    "model": "claude-sonnet-4",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather in Paris and Rome?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/map.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [call("call_1", "Paris"), call("call_2", "Rome")],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "18C sunny"},
        {
            "role": "tool",
            "tool_call_id": "call_2",
            "content": [{"type": "text", "text": "21C cloudy"}],
        },
        {"role": "user", "content": "Thanks"},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather",
                "parameters": WEATHER_SCHEMA,
            },
        }
    ],
    "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    "parallel_tool_calls": False,
    "stop": ["END", ""],
    "temperature": 1.5,
    "top_p": 0.9,
    "max_completion_tokens": 300,
    "user": "user-42",
    "n": 1,
    "seed": None,
}

ANTHROPIC_REQUEST: dict[str, Any] = {
    "model": "claude-sonnet-4",
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather in Paris and Rome?"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
                },
                {"type": "image", "source": {"type": "url", "url": "https://example.com/map.png"}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "call_2",
                    "name": "get_weather",
                    "input": {"city": "Rome"},
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C sunny"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "21C cloudy"},
                {"type": "text", "text": "Thanks"},
            ],
        },
    ],
    "system": "You are terse.\n\nUse metric units.",
    "max_tokens": 300,
    "stop_sequences": ["END"],
    "temperature": 1,
    "top_p": 0.9,
    "metadata": {"user_id": "user-42"},
    "tools": [
        {"name": "get_weather", "description": "Current weather", "input_schema": WEATHER_SCHEMA}
    ],
    "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
}


def test_request_translates_to_exact_anthropic_json() -> None:
    wire, clamped = to_wire(OPENAI_REQUEST)
    assert wire == ANTHROPIC_REQUEST
    assert clamped == ["temperature"]


def test_minimal_request_gets_default_max_tokens_and_no_clamping() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5}
    wire, clamped = to_wire(body, default_max_tokens=77)
    assert wire == {
        "model": "m",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
        "max_tokens": 77,
        "temperature": 0.5,
    }
    assert clamped == []


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
    ],
)
def test_tool_choice(choice: Any, parallel: Any, expected: dict[str, Any]) -> None:
    body = {"model": "m", "messages": [], "tool_choice": choice, "parallel_tool_calls": parallel}
    assert to_wire(body)[0]["tool_choice"] == expected


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("n", 2),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("logit_bias", {"50256": -100}),
        ("seed", 7),
        ("frequency_penalty", 0.5),
        ("presence_penalty", 1.0),
        ("response_format", {"type": "json_schema", "json_schema": {"name": "x"}}),
        ("suffix", "tail"),
    ],
)
def test_unsupported_options_are_refused_naming_the_param(param: str, value: Any) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], param: value}
    with pytest.raises(UpstreamError) as caught:
        to_wire(body)
    assert caught.value.status == 400
    assert caught.value.param == param
    assert f"`{param}` is not supported by Anthropic deployments" in caught.value.message


@pytest.mark.parametrize("stop", ["\n\n", ["END", "  "]])
def test_whitespace_only_stop_sequences_are_refused_never_dropped(stop: Any) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stop": stop}
    with pytest.raises(UpstreamError) as caught:
        to_wire(body)
    assert (caught.value.status, caught.value.param) == (400, "stop")


def test_neutral_values_of_unsupported_options_pass() -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "n": 1,
        "logprobs": False,
        "seed": None,
        "frequency_penalty": 0,
    }
    assert to_wire(body)[0]["max_tokens"] == 4096


ANTHROPIC_RESPONSE: dict[str, Any] = {
    "id": "msg_01ABC",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-20250514",
    "content": [
        {"type": "text", "text": "Let me "},
        {"type": "text", "text": "check."},
        {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 20, "output_tokens": 7},
}


def test_response_translates_to_exact_openai_dict() -> None:
    assert from_wire(ANTHROPIC_RESPONSE, "claude-sonnet-4", created=1700000000) == {
        "id": "msg_01ABC",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "claude-sonnet-4-20250514",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Let me check.",
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": "toolu_9",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 20, "completion_tokens": 7, "total_tokens": 27},
    }


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
        ("pause_turn", "length"),  # cut short: never passed off as a whole answer
    ],
)
def test_stop_reasons(stop_reason: str, finish: str) -> None:
    message = {**ANTHROPIC_RESPONSE, "content": [], "stop_reason": stop_reason}
    assert from_wire(message, "m")["choices"][0]["finish_reason"] == finish


def delta(index: int, **fields: Any) -> tuple[str, dict[str, Any]]:
    return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": fields})


def block(index: int, **fields: Any) -> tuple[str, dict[str, Any]]:
    event = {"type": "content_block_start", "index": index, "content_block": fields}
    return ("content_block_start", event)


def block_stop(index: int) -> tuple[str, dict[str, Any]]:
    return ("content_block_stop", {"type": "content_block_stop", "index": index})


START_MESSAGE = {
    "id": "msg_S1",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [],
    "stop_reason": None,
    "usage": {"input_tokens": 9, "output_tokens": 1},
}
RECORDED_EVENTS: list[tuple[str, dict[str, Any]]] = [
    ("message_start", {"type": "message_start", "message": START_MESSAGE}),
    block(0, type="thinking", thinking=""),
    delta(0, type="thinking_delta", thinking="hmm"),
    block_stop(0),
    block(1, type="text", text=""),
    ("ping", {"type": "ping"}),
    delta(1, type="text_delta", text="Sure"),
    block_stop(1),
    block(2, type="tool_use", id="toolu_1", name="get_weather", input={}),
    delta(2, type="input_json_delta", partial_json=""),
    delta(2, type="input_json_delta", partial_json='{"ci'),
    delta(2, type="input_json_delta", partial_json='ty": "Oslo"}'),
    block_stop(2),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 15},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
]


def chunk(delta: dict[str, Any] | None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choices = [] if delta is None else [
        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    ]  # fmt: skip
    return {
        "id": "msg_S1",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "claude-x",
        "choices": choices,
        **extra,
    }


def translate(include_usage: bool) -> list[dict[str, Any]]:
    translator = StreamTranslator("requested", include_usage=include_usage, created=1700000000)
    chunks = [c for name, data in RECORDED_EVENTS for c in translator.feed(name, data)]
    assert translator.finished
    return chunks


def test_stream_translates_recorded_events_to_exact_chunks() -> None:
    tool_start = {
        "index": 0,
        "id": "toolu_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    assert translate(include_usage=False) == [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Sure"}),
        chunk({"tool_calls": [tool_start]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": 'ty": "Oslo"}'}}]}),
        chunk({}, "tool_calls"),
    ]


def test_stream_with_include_usage_ends_with_a_usage_chunk() -> None:
    chunks = translate(include_usage=True)
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1] == chunk(
        None, usage={"prompt_tokens": 9, "completion_tokens": 15, "total_tokens": 24}
    )
    assert [c["choices"][0]["finish_reason"] for c in chunks[:-1]].count("tool_calls") == 1


@pytest.mark.parametrize(
    ("error_type", "status"),
    [("overloaded_error", 503), ("rate_limit_error", 429), ("api_error", 500), ("weird", 502)],
)
def test_stream_error_event_raises(error_type: str, status: int) -> None:
    translator = StreamTranslator("m", include_usage=False)
    translator.feed(*RECORDED_EVENTS[0])
    with pytest.raises(UpstreamError) as caught:
        translator.feed("error", {"type": "error", "error": {"type": error_type, "message": "x"}})
    assert caught.value.failure is Failure.STREAM_BROKEN
    assert caught.value.status == status
    assert error_from_event({}).status == 500


def body(error_type: str, message: str) -> bytes:
    return f'{{"type":"error","error":{{"type":"{error_type}","message":"{message}"}}}}'.encode()


@pytest.mark.parametrize(
    ("status", "error_type", "message", "expected"),
    [
        (529, "overloaded_error", "Overloaded", (503, "overloaded_error", None)),
        (429, "rate_limit_error", "slow down", (429, "rate_limit_exceeded", "rate_limit_exceeded")),
        (413, "request_too_large", "too big", (413, "request_too_large", None)),
        (500, "api_error", "oops", (500, "server_error", None)),
        (401, "authentication_error", "bad key", (401, "authentication_error", None)),
        (404, "not_found_error", "no model", (404, "not_found_error", None)),
        (
            400,
            "invalid_request_error",
            "prompt is too long: 210000 tokens > 200000 maximum",
            (400, "invalid_request_error", "context_length_exceeded"),
        ),
        (400, "invalid_request_error", "bad field", (400, "invalid_request_error", None)),
    ],
)
def test_error_responses(
    status: int, error_type: str, message: str, expected: tuple[int, str, str | None]
) -> None:
    error = error_from_response(status, body(error_type, message), 1.5)
    assert (error.status, error.type, error.code) == expected
    assert error.message == message
    assert error.retry_after == 1.5
    assert error.failure is Failure.STATUS


def test_error_response_that_is_not_json_keeps_the_text() -> None:
    error = error_from_response(502, b"<html>bad gateway</html>", None, "claude")
    assert (error.status, error.message) == (502, "claude: <html>bad gateway</html>")
