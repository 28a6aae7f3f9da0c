"""Anthropic Messages requests → chat completions requests (router/messages/to_chat.py and
blocks.py): every mapping, every refusal with its `param`, drop mode, `cache_control`
reported, and a two-turn tool round trip. Each chat body produced is checked against
Turnout's own chat schema."""

from __future__ import annotations

from typing import Any

import pytest

from policies.errors import ApiError
from router.messages.blocks import TOOL_ERROR_PREFIX
from router.messages.to_chat import chat_request, reasoning_effort
from router.schemas.chat import ChatCompletionRequest

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def chat(request: dict[str, Any], *, drop: bool = False) -> tuple[dict[str, Any], list[str]]:
    body, dropped = chat_request({"model": "claude-x", "max_tokens": 64, **request}, drop=drop)
    ChatCompletionRequest.model_validate(body)
    return body, dropped


def messages(request: dict[str, Any]) -> list[dict[str, Any]]:
    body, dropped = chat(request)
    assert dropped == []
    return list(body["messages"])


def refusal(request: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        chat_request({"model": "claude-x", "max_tokens": 64, **request})
    assert caught.value.status == 400
    return caught.value


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def test_a_plain_request_maps_its_model_limit_and_message() -> None:
    body, dropped = chat({"messages": [user("Hello")]})
    assert dropped == []
    assert body == {
        "model": "claude-x",
        "messages": [{"role": "user", "content": "Hello"}],
        "max_completion_tokens": 64,
    }


def test_max_tokens_is_required() -> None:
    with pytest.raises(ApiError) as caught:
        chat_request({"model": "m", "messages": [user("hi")]})
    assert caught.value.param == "max_tokens"


def test_system_string_and_text_blocks_become_the_first_system_message() -> None:
    assert messages({"system": "Be brief.", "messages": [user("hi")]})[0] == {
        "role": "system",
        "content": "Be brief.",
    }
    blocks = [{"type": "text", "text": "One."}, {"type": "text", "text": "Two."}]
    assert messages({"system": blocks, "messages": [user("hi")]})[0] == {
        "role": "system",
        "content": "One.\nTwo.",
    }


def test_claude_codes_billing_header_block_is_left_out_of_the_system_prompt() -> None:
    system = [
        {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1; cch=1a2b3c;"},
        {"type": "text", "text": "You are Claude Code."},
    ]
    assert messages({"system": system, "messages": [user("hi")]})[0] == {
        "role": "system",
        "content": "You are Claude Code.",
    }
    only_header = [{"type": "text", "text": "x-anthropic-billing-header: cch=0;"}]
    assert messages({"system": only_header, "messages": [user("hi")]}) == [user("hi")]


def test_text_blocks_are_one_string_and_images_make_parts() -> None:
    texts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert messages({"messages": [user(texts)]}) == [user("a\nb")]
    images = [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
    ]
    assert messages({"messages": [user(images)]}) == [
        user(
            [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAA"}},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}},
            ]
        )
    ]


def test_two_turn_tool_round_trip_maps_tool_use_and_tool_result() -> None:
    history = [
        user("Weather in Paris and Rome?"),
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Two calls.", "signature": "sig"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_2",
                    "name": "get_weather",
                    "input": {"city": "Rome"},
                },
            ],
        },
        user(
            [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_2",
                    "content": [
                        {"type": "text", "text": "city"},
                        {"type": "text", "text": "unknown"},
                    ],
                    "is_error": True,
                },
                {"type": "text", "text": "Thanks."},
            ]
        ),
    ]
    body, dropped = chat({"messages": history, "tools": [WEATHER_TOOL]})
    assert dropped == []
    assert body["messages"] == [
        user("Weather in Paris and Rome?"),
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "toolu_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Rome"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "18C"},
        {"role": "tool", "tool_call_id": "toolu_2", "content": TOOL_ERROR_PREFIX + "city\nunknown"},
        user("Thanks."),
    ]
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "parameters": WEATHER_TOOL["input_schema"],
                "description": "The weather in a city.",
            },
        }
    ]


def test_an_assistant_turn_of_tool_calls_only_has_no_content() -> None:
    turn = {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}],
    }
    [_, assistant] = messages({"messages": [user("go"), turn]})
    assert assistant["content"] is None
    assert assistant["tool_calls"][0]["function"]["arguments"] == "{}"


def test_tool_choice_modes_and_parallel_calls() -> None:
    def choice(value: dict[str, Any]) -> dict[str, Any]:
        body, _ = chat({"messages": [user("hi")], "tools": [WEATHER_TOOL], "tool_choice": value})
        return {k: body[k] for k in ("tool_choice", "parallel_tool_calls") if k in body}

    assert choice({"type": "auto"}) == {"tool_choice": "auto"}
    assert choice({"type": "any"}) == {"tool_choice": "required"}
    assert choice({"type": "none"}) == {"tool_choice": "none"}
    assert choice({"type": "tool", "name": "get_weather"}) == {
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}}
    }
    assert choice({"type": "auto", "disable_parallel_tool_use": True}) == {
        "tool_choice": "auto",
        "parallel_tool_calls": False,
    }


def test_sampling_stop_user_and_stream_options_are_carried() -> None:
    body, _ = chat(
        {
            "messages": [user("hi")],
            "temperature": 0.2,
            "top_p": 0.9,
            "top_k": 40,
            "stop_sequences": ["END", "###"],
            "metadata": {"user_id": "u-1"},
            "stream": True,
        }
    )
    assert body["temperature"] == 0.2
    assert body["top_p"] == 0.9
    assert body["top_k"] == 40
    assert body["stop"] == ["END", "###"]
    assert body["user"] == "u-1"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}


def test_a_request_not_streamed_asks_no_stream() -> None:
    body, _ = chat({"messages": [user("hi")], "stream": False})
    assert "stream" not in body
    assert "stream_options" not in body


@pytest.mark.parametrize(
    ("budget", "effort"),
    [
        (1024, "low"),
        (4095, "low"),
        (4096, "medium"),
        (16383, "medium"),
        (16384, "high"),
        (31999, "high"),
    ],
)
def test_thinking_budgets_map_to_reasoning_effort(budget: int, effort: str) -> None:
    assert reasoning_effort(budget) == effort
    body, _ = chat(
        {
            "messages": [user("hi")],
            "max_tokens": 64000,
            "thinking": {"type": "enabled", "budget_tokens": budget},
        }
    )
    assert body["reasoning_effort"] == effort


def test_thinking_disabled_asks_nothing_and_output_config_effort_wins() -> None:
    body, _ = chat({"messages": [user("hi")], "thinking": {"type": "disabled"}})
    assert "reasoning_effort" not in body
    body, _ = chat(
        {
            "messages": [user("hi")],
            "thinking": {"type": "enabled", "budget_tokens": 2000},
            "output_config": {"effort": "max"},
        }
    )
    assert body["reasoning_effort"] == "max"


def test_an_output_format_schema_is_a_json_schema_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body, _ = chat(
        {
            "messages": [user("hi")],
            "output_config": {"format": {"type": "json_schema", "schema": schema}},
        }
    )
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema},
    }


def test_cache_control_anywhere_is_left_out_and_reported_once() -> None:
    ephemeral = {"type": "ephemeral"}
    request = {
        "cache_control": ephemeral,
        "system": [{"type": "text", "text": "S", "cache_control": ephemeral}],
        "messages": [
            user([{"type": "text", "text": "hi", "cache_control": ephemeral}]),
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "yo", "cache_control": ephemeral}],
            },
            user(
                [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t",
                        "content": [{"type": "text", "text": "r", "cache_control": ephemeral}],
                        "cache_control": ephemeral,
                    }
                ]
            ),
        ],
        "tools": [{**WEATHER_TOOL, "cache_control": ephemeral}],
    }
    for drop in (False, True):
        body, dropped = chat(request, drop=drop)
        assert dropped == ["cache_control"]
        assert "cache_control" not in repr(body)


def test_a_tool_schema_property_named_cache_control_is_not_reported() -> None:
    tool = {
        "name": "f",
        "input_schema": {"type": "object", "properties": {"cache_control": {"type": "string"}}},
    }
    turn = {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {"cache_control": "x"}}],
    }
    body, dropped = chat({"messages": [user("hi"), turn], "tools": [tool]})
    assert dropped == []
    assert body["tools"][0]["function"]["parameters"] == tool["input_schema"]


SERVER_TOOL = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
DOCUMENT = {
    "type": "document",
    "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
}


@pytest.mark.parametrize(
    ("request_fields", "param"),
    [
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": [{"type": "image", "source": {"type": "url", "url": "u"}}],
                    }
                ]
            },
            "messages[0].content[0].type",
        ),
        ({"tools": [WEATHER_TOOL, SERVER_TOOL]}, "tools[1].type"),
        ({"tools": [{"type": "bash_20250124", "name": "bash"}]}, "tools[0].type"),
        (
            {"tools": [{"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}]},
            "tools[0].type",
        ),
        (
            {"messages": [user("a"), {"role": "assistant", "content": "b"}, user([DOCUMENT])]},
            "messages[2].content[0].type",
        ),
        ({"mcp_servers": [{"type": "url", "url": "https://x", "name": "x"}]}, "mcp_servers"),
        ({"container": "cntr_1"}, "container"),
        (
            {"context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]}},
            "context_management",
        ),
        (
            {
                "messages": [
                    user(
                        [
                            {
                                "type": "tool_result",
                                "tool_use_id": "t",
                                "content": [{"type": "image", "source": {}}],
                            }
                        ]
                    )
                ]
            },
            "messages[0].content[0].content[0].type",
        ),
        (
            {
                "messages": [
                    user("a"),
                    {
                        "role": "assistant",
                        "content": [
                            {
                                "type": "server_tool_use",
                                "id": "s",
                                "name": "web_search",
                                "input": {},
                            }
                        ],
                    },
                ]
            },
            "messages[1].content[0].type",
        ),
    ],
)
def test_what_chat_cannot_carry_is_refused_naming_it_or_dropped(
    request_fields: dict[str, Any], param: str
) -> None:
    request = {"messages": [user("hi")], **request_fields}
    assert refusal(request).param == param
    _, dropped = chat(request, drop=True)
    assert dropped == [param.removesuffix(".type")]


def test_dropped_server_tools_leave_tool_choice_out_when_no_tool_remains() -> None:
    body, dropped = chat(
        {"messages": [user("hi")], "tools": [SERVER_TOOL], "tool_choice": {"type": "any"}},
        drop=True,
    )
    assert dropped == ["tools[0]"]
    assert "tools" not in body
    assert "tool_choice" not in body


def test_a_dropped_document_keeps_the_rest_of_the_message() -> None:
    body, dropped = chat(
        {"messages": [user([DOCUMENT, {"type": "text", "text": "Summarise."}])]}, drop=True
    )
    assert dropped == ["messages[0].content[0]"]
    assert body["messages"] == [user("Summarise.")]


@pytest.mark.parametrize(
    ("request_fields", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "developer", "content": "x"}]}, "messages[0].role"),
        ({"messages": [user(7)]}, "messages[0].content"),
        ({"messages": [user([{"type": "text"}])]}, "messages[0].content[0].text"),
        ({"messages": [user(["text"])]}, "messages[0].content[0]"),
        ({"messages": [user([{"text": "x"}])]}, "messages[0].content[0].type"),
        (
            {"messages": [user([{"type": "image", "source": {"type": "file", "file_id": "f"}}])]},
            "messages[0].content[0].source.type",
        ),
        (
            {"messages": [user([{"type": "image", "source": {"type": "base64"}}])]},
            "messages[0].content[0].source",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": [{"type": "tool_use", "id": "t", "name": "f", "input": "x"}],
                    }
                ]
            },
            "messages[0].content[0].input",
        ),
        (
            {"messages": [user([{"type": "tool_result", "content": "x"}])]},
            "messages[0].content[0].tool_use_id",
        ),
        ({"system": [{"type": "image"}]}, "system[0].type"),
        ({"tools": [{"input_schema": {"type": "object"}}]}, "tools[0].name"),
        ({"tools": [{"name": "f"}]}, "tools[0].input_schema"),
        ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "tool"}}, "tool_choice.name"),
        ({"tools": [WEATHER_TOOL], "tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
        ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
        ({"output_config": {"format": {"type": "xml"}}}, "output_config.format.type"),
    ],
)
def test_malformed_requests_are_refused_naming_the_field(
    request_fields: dict[str, Any], param: str
) -> None:
    request = {"messages": [user("hi")], **request_fields}
    assert refusal(request).param == param
    with pytest.raises(ApiError):  # drop mode drops only what chat cannot carry
        chat_request({"model": "m", "max_tokens": 1, **request}, drop=True)


def test_ignored_fields_change_nothing() -> None:
    base, _ = chat({"messages": [user("hi")]})
    body, dropped = chat(
        {
            "messages": [user("hi")],
            "service_tier": "auto",
            "inference_geo": "us",
            "speed": "fast",
            "thinking": {"type": "adaptive"},
        }
    )
    assert dropped == []
    assert body == base
