"""Responses requests → chat completions requests (router/responses/to_chat.py): every
mapping, every refusal with its `param`, drop mode, and a function-call round trip through
stored history. Each chat body produced is checked against Turnout's own chat schema, and
each input item against the SDK's item models."""

from __future__ import annotations

from typing import Any

import pytest
from openai.types.responses import ResponseItem
from pydantic import TypeAdapter

from policies.errors import ApiError
from router.responses.to_chat import chat_request, input_items
from router.schemas.chat import ChatCompletionRequest

ITEM = TypeAdapter(ResponseItem)


def chat(request: dict[str, Any], history: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    body, dropped = chat_request({"model": "m", **request}, history or [])
    assert dropped == []
    ChatCompletionRequest.model_validate(body)
    return body


def refusal(request: dict[str, Any], history: list[dict[str, Any]] | None = None) -> ApiError:
    with pytest.raises(ApiError) as caught:
        chat_request({"model": "m", **request}, history or [])
    assert caught.value.status == 400
    return caught.value


def test_a_string_input_is_one_user_message_after_the_instructions() -> None:
    body = chat({"input": "hello", "instructions": "Be brief."})
    assert body == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello"},
        ],
    }
    [item] = input_items({"input": "hello"})
    assert item["id"].startswith("msg_")
    assert item == {
        "id": item["id"],
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": "hello"}],
    }
    ITEM.validate_python(item)


def test_message_items_of_every_role_and_part() -> None:
    request = {
        "input": [
            {"role": "developer", "content": "Answer in French."},
            {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "S"}]},
            {"role": "user", "content": "What is this?"},
            {"role": "assistant", "content": "A cat."},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "And this?"},
                    {"type": "input_image", "image_url": "https://x/a.png", "detail": "low"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AA"},
                    {"type": "input_image", "image_url": "https://x/b.png", "detail": "original"},
                ],
            },
        ]
    }
    assert chat(request)["messages"] == [
        {"role": "developer", "content": "Answer in French."},
        {"role": "system", "content": "S"},
        {"role": "user", "content": "What is this?"},
        {"role": "assistant", "content": "A cat."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And this?"},
                {"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "low"}},
                {
                    "type": "image_url",
                    "image_url": {"url": "data:image/png;base64,AA", "detail": "auto"},
                },
                {"type": "image_url", "image_url": {"url": "https://x/b.png", "detail": "high"}},
            ],
        },
    ]
    items = input_items(request)
    assert [item["id"][:4] for item in items] == ["msg_"] * 5
    # An assistant's text is stored as its own output is: `output_text` with annotations.
    assert items[3]["content"] == [
        {"type": "output_text", "text": "A cat.", "annotations": [], "logprobs": []}
    ]
    assert items[4]["content"][2]["detail"] == "auto"
    for item in items:
        ITEM.validate_python(item)


def test_items_keep_their_own_ids_and_a_given_list_is_not_changed() -> None:
    given = [{"id": "msg_mine", "type": "message", "role": "user", "content": "hi"}]
    [item] = input_items({"input": given})
    assert item["id"] == "msg_mine"
    assert given == [{"id": "msg_mine", "type": "message", "role": "user", "content": "hi"}]


# One turn stored (its input, then its output: text and two calls), then the outputs.
HISTORY: list[dict[str, Any]] = [
    {
        "id": "msg_1",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": "Weather in Paris and Rome?"}],
    },
    {"id": "rs_1", "type": "reasoning", "summary": []},
    {
        "id": "msg_2",
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [
            {"type": "output_text", "text": "Let me check.", "annotations": [], "logprobs": []}
        ],
    },
    {
        "id": "fc_1",
        "type": "function_call",
        "call_id": "call_a",
        "name": "weather",
        "arguments": '{"city":"Paris"}',
        "status": "completed",
    },
    {
        "id": "fc_2",
        "type": "function_call",
        "call_id": "call_b",
        "name": "weather",
        "arguments": '{"city":"Rome"}',
        "status": "completed",
    },
]
OUTPUTS: list[dict[str, Any]] = [
    {"type": "function_call_output", "call_id": "call_a", "output": "18C"},
    {
        "type": "function_call_output",
        "call_id": "call_b",
        "output": [{"type": "input_text", "text": "2"}, {"type": "input_text", "text": "4C"}],
    },
]


def test_function_calls_and_their_outputs_round_trip_through_history() -> None:
    body = chat({"input": OUTPUTS, "instructions": "Use tools."}, HISTORY)
    assert body["messages"] == [
        {"role": "system", "content": "Use tools."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_b", "content": "24C"},
    ]
    items = input_items({"input": OUTPUTS})
    assert [item["id"][:4] for item in items] == ["fco_", "fco_"]
    for item in [*HISTORY, *items]:
        ITEM.validate_python(item)


def test_calls_without_text_are_one_assistant_message_of_their_own() -> None:
    calls = [item for item in HISTORY if item["type"] == "function_call"]
    body = chat({"input": [HISTORY[0], *calls, *OUTPUTS]})
    assistant = body["messages"][1]
    assert assistant["content"] is None
    assert [call["id"] for call in assistant["tool_calls"]] == ["call_a", "call_b"]


def test_function_tools_tool_choice_and_parallel_calls() -> None:
    tool = {
        "type": "function",
        "name": "weather",
        "description": "The weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": True,
    }
    body = chat(
        {
            "input": "hi",
            "tools": [tool, {"type": "function", "name": "bare"}],
            "tool_choice": {"type": "function", "name": "weather"},
            "parallel_tool_calls": False,
        }
    )
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "weather",
                "description": "The weather in a city.",
                "parameters": tool["parameters"],
                "strict": True,
            },
        },
        {"type": "function", "function": {"name": "bare"}},
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert body["parallel_tool_calls"] is False
    for mode in ("auto", "none", "required"):
        assert chat({"input": "hi", "tools": [tool], "tool_choice": mode})["tool_choice"] == mode


def test_without_tools_tool_choice_and_parallel_calls_say_nothing() -> None:
    body = chat({"input": "hi", "tool_choice": "auto", "parallel_tool_calls": True})
    assert "tool_choice" not in body
    assert "parallel_tool_calls" not in body


HOSTED_TOOLS = [
    {"type": "web_search"},
    {"type": "file_search", "vector_store_ids": ["vs_1"]},
    {
        "type": "computer_use_preview",
        "display_width": 1,
        "display_height": 1,
        "environment": "linux",
    },
    {"type": "mcp", "server_label": "x", "server_url": "https://x"},
    {"type": "code_interpreter", "container": {"type": "auto"}},
    {"type": "image_generation"},
    {"type": "custom", "name": "grammar"},
]


@pytest.mark.parametrize("hosted", HOSTED_TOOLS, ids=lambda tool: tool["type"])
def test_other_tools_are_refused_naming_their_type_or_dropped(hosted: dict[str, Any]) -> None:
    function = {"type": "function", "name": "f"}
    request = {"model": "m", "input": "hi", "tools": [function, hosted]}
    error = refusal(request)
    assert error.param == "tools[1].type"
    assert hosted["type"] in error.message
    body, dropped = chat_request(request, drop=True)
    assert dropped == ["tools[1]"]
    assert body["tools"] == [{"type": "function", "function": {"name": "f"}}]


def test_other_tool_choices_are_refused_or_dropped() -> None:
    request = {
        "input": "hi",
        "tools": [{"type": "function", "name": "f"}],
        "tool_choice": {"type": "web_search_preview"},
    }
    assert refusal(request).param == "tool_choice"
    body, dropped = chat_request({"model": "m", **request}, drop=True)
    assert dropped == ["tool_choice"]
    assert "tool_choice" not in body
    nameless = {**request, "tool_choice": {"type": "function"}}
    assert refusal(nameless).param == "tool_choice.name"


def test_text_format_and_verbosity() -> None:
    assert "response_format" not in chat({"input": "hi", "text": {"format": {"type": "text"}}})
    body = chat({"input": "hi", "text": {"format": {"type": "json_object"}, "verbosity": "low"}})
    assert body["response_format"] == {"type": "json_object"}
    assert body["verbosity"] == "low"
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    form = {
        "type": "json_schema",
        "name": "answer",
        "schema": schema,
        "strict": True,
        "description": "An answer.",
    }
    body = chat({"input": "hi", "text": {"format": form}})
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "answer",
            "schema": schema,
            "strict": True,
            "description": "An answer.",
        },
    }


def test_sampling_output_and_bookkeeping_options() -> None:
    body = chat(
        {
            "input": "hi",
            "max_output_tokens": 64,
            "temperature": 0.5,
            "top_p": 0.9,
            "user": "u1",
            "metadata": {"k": "v"},
            "safety_identifier": "s1",
            "prompt_cache_key": "p1",
            "service_tier": "flex",
            "top_logprobs": 3,
            "reasoning": {"effort": "low", "summary": "auto"},
            "store": True,
            "stream": True,
            "max_tool_calls": 3,
            "truncation": "disabled",
            "background": False,
        }
    )
    assert body == {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "max_completion_tokens": 64,
        "temperature": 0.5,
        "top_p": 0.9,
        "user": "u1",
        "metadata": {"k": "v"},
        "safety_identifier": "s1",
        "prompt_cache_key": "p1",
        "service_tier": "flex",
        "logprobs": True,
        "top_logprobs": 3,
        "reasoning_effort": "low",
        "stream": True,
        "stream_options": {"include_usage": True},
    }


def test_includes_that_can_be_honoured_are_and_others_are_refused_or_dropped() -> None:
    honoured = ["message.output_text.logprobs", "reasoning.encrypted_content"]
    assert chat({"input": "hi", "include": honoured})["logprobs"] is True
    request = {
        "input": "hi",
        "include": ["reasoning.encrypted_content", "file_search_call.results"],
    }
    assert refusal(request).param == "include[1]"
    body, dropped = chat_request({"model": "m", **request}, drop=True)
    assert dropped == ["include[1]"]
    assert "logprobs" not in body


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("background", True),
        ("conversation", "conv_1"),
        ("prompt", {"id": "pmpt_1"}),
        ("truncation", "auto"),
        ("context_management", [{"type": "compaction"}]),
    ],
)
def test_fields_chat_cannot_honour_are_refused_or_dropped(field: str, value: Any) -> None:
    request = {"input": "hi", field: value}
    assert refusal(request).param == field
    body, dropped = chat_request({"model": "m", **request}, drop=True)
    assert dropped == [field]
    assert field not in body


def test_no_input_at_all_is_refused() -> None:
    assert refusal({}).param == "input"
    assert refusal({"input": []}).param == "input"
    assert refusal({"input": 3}).param == "input"
    # With a conversation before it, a turn may add nothing of its own.
    assert chat({}, HISTORY[:1])["messages"][0]["role"] == "user"
