"""Whole chat completions → Responses `Response` objects (router/responses/from_chat.py),
on recorded chat answers; every object produced is checked against the SDK's model."""

from __future__ import annotations

from typing import Any

from openai.types.responses import Response

from router.responses.from_chat import output_items, response_error, response_object

REQUEST: dict[str, Any] = {"model": "gpt-4o-mini", "input": "Say hi."}


def chat_answer(message: dict[str, Any], finish: str = "stop", **extra: Any) -> dict[str, Any]:
    """A `chat.completion` as OpenAI returns it."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", **message},
                "finish_reason": finish,
                **extra,
            }
        ],
        "usage": {
            "prompt_tokens": 20,
            "completion_tokens": 7,
            "total_tokens": 27,
            "prompt_tokens_details": {"cached_tokens": 16, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 3, "audio_tokens": 0},
        },
    }


def mapped(
    chat: dict[str, Any], request: dict[str, Any] | None = None, **kw: Any
) -> dict[str, Any]:
    response = response_object("resp_1", request or REQUEST, chat, created_at=1700000001, **kw)
    Response.model_validate(response)
    return response


def test_a_text_answer() -> None:
    response = mapped(chat_answer({"content": "Hi!", "refusal": None}), completed_at=1700000005)
    [item] = response["output"]
    assert item["id"].startswith("msg_")
    assert item == {
        "id": item["id"],
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": "Hi!", "annotations": [], "logprobs": []}],
    }
    assert response["id"] == "resp_1"
    assert response["object"] == "response"
    assert response["status"] == "completed"
    assert response["created_at"] == 1700000001
    assert response["completed_at"] == 1700000005
    assert response["model"] == "gpt-4o-mini-2024-07-18"
    assert response["error"] is None
    assert response["incomplete_details"] is None
    assert response["usage"] == {
        "input_tokens": 20,
        "input_tokens_details": {"cached_tokens": 16, "cache_write_tokens": 0},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 3},
        "total_tokens": 27,
    }
    assert Response.model_validate(response).output_text == "Hi!"


def test_the_defaults_echoed_as_openai_does() -> None:
    response = mapped(chat_answer({"content": "Hi!"}))
    echoed = {key: response[key] for key in ECHO_DEFAULTS}
    assert echoed == ECHO_DEFAULTS
    assert "user" not in response  # the spec's `user` is a string: absent, not null


ECHO_DEFAULTS: dict[str, Any] = {
    "instructions": None,
    "max_output_tokens": None,
    "metadata": {},
    "parallel_tool_calls": True,
    "previous_response_id": None,
    "reasoning": {"effort": None, "summary": None},
    "store": True,
    "temperature": 1.0,
    "text": {"format": {"type": "text"}},
    "tool_choice": "auto",
    "tools": [],
    "top_p": 1.0,
    "truncation": "disabled",
}


def test_the_request_settings_echoed() -> None:
    tool = {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True}
    form = {"type": "json_schema", "name": "a", "schema": {"type": "object"}, "strict": True}
    request = {
        **REQUEST,
        "instructions": "Be brief.",
        "max_output_tokens": 100,
        "metadata": {"k": "v"},
        "parallel_tool_calls": False,
        "reasoning": {"effort": "low"},
        "store": False,
        "temperature": 0.2,
        "text": {"format": form, "verbosity": "low"},
        "tool_choice": "required",
        "tools": [tool],
        "top_p": 0.5,
        "user": "u1",
    }
    response = mapped(chat_answer({"content": "{}"}), request, previous_response_id="resp_0")
    assert response["user"] == "u1"
    assert {key: response[key] for key in ECHO_DEFAULTS} == {
        "instructions": "Be brief.",
        "max_output_tokens": 100,
        "metadata": {"k": "v"},
        "parallel_tool_calls": False,
        "previous_response_id": "resp_0",
        "reasoning": {"effort": "low", "summary": None},
        "store": False,
        "temperature": 0.2,
        "text": {"format": form, "verbosity": "low"},
        "tool_choice": "required",
        "tools": [tool],
        "top_p": 0.5,
        "truncation": "disabled",
    }


def test_tool_calls_are_function_call_items_with_their_call_ids() -> None:
    calls = [
        {
            "id": "call_a",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"c":1}'},
        },
        {"id": "call_b", "type": "function", "function": {"name": "time", "arguments": "{}"}},
    ]
    response = mapped(chat_answer({"content": None, "tool_calls": calls}, "tool_calls"))
    assert response["status"] == "completed"
    first, second = response["output"]
    assert first["id"].startswith("fc_")
    assert first == {
        "id": first["id"],
        "type": "function_call",
        "call_id": "call_a",
        "name": "weather",
        "arguments": '{"c":1}',
        "status": "completed",
    }
    assert (second["call_id"], second["name"], second["arguments"]) == ("call_b", "time", "{}")
    assert first["id"] != second["id"]


def test_text_said_with_tool_calls_comes_first() -> None:
    calls = [{"id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    response = mapped(chat_answer({"content": "Checking.", "tool_calls": calls}, "tool_calls"))
    assert [item["type"] for item in response["output"]] == ["message", "function_call"]


def test_an_answer_cut_by_the_token_limit_is_incomplete() -> None:
    response = mapped(chat_answer({"content": "Once upon a"}, "length"))
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert response["output"][0]["status"] == "incomplete"
    assert response.get("completed_at") is None


def test_a_filtered_answer_is_incomplete_for_the_content_filter() -> None:
    response = mapped(chat_answer({"content": ""}, "content_filter"))
    assert response["status"] == "incomplete"
    assert response["incomplete_details"] == {"reason": "content_filter"}
    assert response["output"] == []


def test_a_refusal_is_a_refusal_part() -> None:
    response = mapped(chat_answer({"content": None, "refusal": "I can't help with that."}))
    [item] = response["output"]
    assert item["content"] == [{"type": "refusal", "refusal": "I can't help with that."}]


def test_logprobs_asked_for_come_with_the_text() -> None:
    logprobs = {
        "content": [
            {
                "token": "Hi",
                "logprob": -0.1,
                "bytes": [72, 105],
                "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105]}],
            },
            {"token": "!", "logprob": -0.2, "bytes": None, "top_logprobs": []},
        ],
        "refusal": None,
    }
    response = mapped(chat_answer({"content": "Hi!"}, logprobs=logprobs))
    assert response["output"][0]["content"][0]["logprobs"] == [
        {
            "token": "Hi",
            "logprob": -0.1,
            "bytes": [72, 105],
            "top_logprobs": [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105]}],
        },
        {"token": "!", "logprob": -0.2, "bytes": [33], "top_logprobs": []},
    ]


def test_an_answer_without_usage_has_no_usage() -> None:
    chat = chat_answer({"content": "Hi!"})
    del chat["usage"]
    assert "usage" not in mapped(chat)


def test_output_items_are_what_is_stored_for_the_conversation() -> None:
    response = mapped(chat_answer({"content": "Hi!"}))
    assert output_items(response) == response["output"]


def test_errors_carry_a_response_error_code() -> None:
    envelope = {"error": {"message": "Slow down", "type": "rate_limit_error", "code": None}}
    assert response_error(envelope) == {"code": "rate_limit_exceeded", "message": "Slow down"}
    upstream = {"message": "Bad gateway", "type": "api_error", "code": "upstream_error"}
    assert response_error(upstream) == {"code": "server_error", "message": "Bad gateway"}
    image = {"message": "Bad image", "type": "invalid_request_error", "code": "invalid_image_url"}
    assert response_error(image)["code"] == "invalid_image_url"


def test_function_tools_are_echoed_with_parameters_and_strict() -> None:
    request = {**REQUEST, "tools": [{"type": "function", "name": "bare"}]}
    response = mapped(chat_answer({"content": "Hi!"}), request)
    assert response["tools"] == [
        {"type": "function", "name": "bare", "parameters": None, "strict": None}
    ]
