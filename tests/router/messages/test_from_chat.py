"""Chat completions answers → Anthropic messages, and Turnout's errors → Anthropic's
(router/messages/from_chat.py). Each message produced is validated with the anthropic
SDK's `Message` model; each error body is read by the SDK itself (over a mock transport),
which must raise the exception class Anthropic's own status would give."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx2
import orjson
import pytest
from anthropic.types import Message

from router.messages.from_chat import (
    STOP_REASONS,
    error_body,
    message_object,
    new_message_id,
    stream_error,
)
from router.messages.to_chat import chat_request


def completion(message: dict[str, Any], finish: str = "stop", **choice: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "backend-model",
        "choices": [{"index": 0, "message": message, "finish_reason": finish, **choice}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37},
    }


def answer(chat: dict[str, Any], stop_sequences: tuple[str, ...] = ()) -> dict[str, Any]:
    message = message_object("msg_1", chat, model="claude-x", stop_sequences=stop_sequences)
    Message.model_validate(message)
    return message


def test_a_text_answer_is_a_message_with_one_text_block() -> None:
    message = answer(completion({"role": "assistant", "content": "Hello!"}))
    assert message == {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [{"type": "text", "text": "Hello!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 30,
            "output_tokens": 7,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def test_tool_calls_are_tool_use_blocks_after_the_text() -> None:
    calls = [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}},
        {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "not json"}},
        {"id": "call_3", "type": "function", "function": {"name": "h", "arguments": "[1]"}},
        {"type": "function", "function": {"name": "k", "arguments": ""}},
    ]
    message = answer(
        completion({"role": "assistant", "content": "Let me.", "tool_calls": calls}, "tool_calls")
    )
    assert message["stop_reason"] == "tool_use"
    text, *uses = message["content"]
    assert text == {"type": "text", "text": "Let me."}
    assert [(u["id"], u["name"], u["input"]) for u in uses[:3]] == [
        ("call_1", "f", {"a": 1}),
        ("call_2", "g", {}),
        ("call_3", "h", {}),
    ]
    assert uses[3]["id"].startswith("toolu_")
    assert uses[3]["input"] == {}


def test_tool_calls_only_give_no_text_block() -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    message = answer(
        completion({"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls")
    )
    assert [block["type"] for block in message["content"]] == ["tool_use"]


@pytest.mark.parametrize(
    ("finish", "reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
        ("something_new", "end_turn"),
    ],
)
def test_finish_reasons_map_to_stop_reasons(finish: str | None, reason: str) -> None:
    message = answer(completion({"role": "assistant", "content": "x"}, finish))  # type: ignore[arg-type]
    assert message["stop_reason"] == reason
    assert message["stop_sequence"] is None


def test_the_stop_table_is_the_adapters_read_the_other_way() -> None:
    assert STOP_REASONS == {
        "stop": "end_turn",
        "length": "max_tokens",
        "tool_calls": "tool_use",
        "content_filter": "refusal",
        "function_call": "tool_use",
    }


def test_a_stop_sequence_is_reported_where_the_backend_says_which_matched() -> None:
    reply = {"role": "assistant", "content": "Done"}
    vllm = completion(reply, "stop", stop_reason="END")
    message = answer(vllm, ("###", "END"))
    assert (message["stop_reason"], message["stop_sequence"]) == ("stop_sequence", "END")
    # Not one of the request's (an EOS token id, or no stop_sequences given): end_turn.
    assert answer(vllm)["stop_reason"] == "end_turn"
    token = answer(completion(reply, "stop", stop_reason=128001), ("END",))
    assert (token["stop_reason"], token["stop_sequence"]) == ("end_turn", None)


def test_a_refusal_is_text_with_the_refusal_stop_reason() -> None:
    message = answer(completion({"role": "assistant", "content": None, "refusal": "I can't."}))
    assert message["content"] == [{"type": "text", "text": "I can't."}]
    assert message["stop_reason"] == "refusal"


def test_cached_prompt_tokens_are_cache_reads_not_input() -> None:
    chat = completion({"role": "assistant", "content": "x"})
    chat["usage"] = {
        "prompt_tokens": 1000,
        "completion_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 800, "cache_write_tokens": 150},
    }
    assert answer(chat)["usage"] == {
        "input_tokens": 50,
        "output_tokens": 5,
        "cache_creation_input_tokens": 150,
        "cache_read_input_tokens": 800,
    }
    del chat["usage"]
    assert answer(chat)["usage"]["input_tokens"] == 0


def test_reasoning_is_left_out_of_the_message() -> None:
    reply = {"role": "assistant", "content": "4", "reasoning_content": "2+2..."}
    assert answer(completion(reply))["content"] == [{"type": "text", "text": "4"}]


def test_a_tool_round_trip_comes_back_as_the_same_chat_call() -> None:
    """A chat tool call → an Anthropic message → the client's next request → chat: the
    same call (id, name, arguments), then its result as a tool message."""
    call = {
        "id": "call_9",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    }
    first = answer(
        completion({"role": "assistant", "content": None, "tool_calls": [call]}, "tool_calls")
    )
    # What the SDK sends back of an answer: its content blocks, as they came.
    sent_back = [
        block.model_dump(exclude_none=True) for block in Message.model_validate(first).content
    ]
    follow_up = {
        "model": "claude-x",
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": sent_back},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "call_9", "content": "18C"}],
            },
        ],
    }
    chat, dropped = chat_request(follow_up)
    assert dropped == []
    assert chat["messages"][1] == {"role": "assistant", "content": None, "tool_calls": [call]}
    assert chat["messages"][2] == {"role": "tool", "tool_call_id": "call_9", "content": "18C"}


def test_message_ids_look_like_anthropics() -> None:
    first, second = new_message_id(), new_message_id()
    assert first.startswith("msg_")
    assert first != second


@pytest.mark.parametrize(
    ("status", "wire_status", "kind", "exception"),
    [
        (400, 400, "invalid_request_error", anthropic.BadRequestError),
        (401, 401, "authentication_error", anthropic.AuthenticationError),
        (403, 403, "permission_error", anthropic.PermissionDeniedError),
        (404, 404, "not_found_error", anthropic.NotFoundError),
        (413, 413, "request_too_large", anthropic.APIStatusError),
        (429, 429, "rate_limit_error", anthropic.RateLimitError),
        (500, 500, "api_error", anthropic.InternalServerError),
        (503, 529, "overloaded_error", anthropic.OverloadedError),
        (499, 499, "api_error", anthropic.APIStatusError),
        (409, 409, "invalid_request_error", anthropic.ConflictError),
        (408, 408, "invalid_request_error", anthropic.APIStatusError),
        (502, 502, "api_error", anthropic.InternalServerError),
        (504, 504, "timeout_error", anthropic.InternalServerError),
    ],
)
def test_error_bodies_are_anthropics_and_the_sdk_raises_the_matching_class(
    status: int, wire_status: int, kind: str, exception: type[Exception]
) -> None:
    out_status, body = error_body(status, "It went wrong.")
    assert (out_status, body) == (
        wire_status,
        {"type": "error", "error": {"type": kind, "message": "It went wrong."}},
    )

    def handler(_: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(out_status, content=orjson.dumps(body))

    client = anthropic.Anthropic(
        api_key="k",
        base_url="http://turnout.test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )
    with pytest.raises(exception) as caught:
        client.messages.create(
            model="claude-x", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert isinstance(caught.value, anthropic.APIStatusError)
    assert caught.value.status_code == wire_status
    assert caught.value.body == body


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ({"error": {"message": "m", "type": "server_error"}}, "api_error"),
        ({"message": "m", "type": "overloaded_error"}, "overloaded_error"),
        ({"message": "m", "type": "service_unavailable"}, "overloaded_error"),
        ({"message": "m", "type": "requests", "code": "rate_limit_exceeded"}, "rate_limit_error"),
        ({"message": "m", "type": "rate_limit_exceeded"}, "rate_limit_error"),
        ({"message": "m", "type": "upstream_stream_error"}, "api_error"),
        ({"message": "m", "type": "invalid_request_error"}, "invalid_request_error"),
        ({"message": "m", "type": "odd", "code": "rate_limit_hit"}, "rate_limit_error"),
    ],
)
def test_stream_errors_take_anthropics_types(error: dict[str, Any], kind: str) -> None:
    assert stream_error(error) == {"type": "error", "error": {"type": kind, "message": "m"}}
