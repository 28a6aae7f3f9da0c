"""Input items the chat translation (router/responses/to_chat.py) refuses, each with the
`param` that names it: bad shapes, and content chat cannot carry."""

from __future__ import annotations

from typing import Any

import pytest

from policies.errors import ApiError
from router.responses.to_chat import chat_request


def refusal(request: dict[str, Any], history: list[dict[str, Any]] | None = None) -> ApiError:
    with pytest.raises(ApiError) as caught:
        chat_request({"model": "m", **request}, history or [])
    assert caught.value.status == 400
    return caught.value


@pytest.mark.parametrize(
    ("item", "param"),
    [
        (
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "a"},
                    {"type": "input_file", "file_id": "f"},
                ],
            },
            "input[0].content[1].type",
        ),
        (
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]},
            "input[0].content[0].type",
        ),
        (
            {"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]},
            "input[0].content[0].file_id",
        ),
        (
            {"role": "user", "content": [{"type": "input_image", "detail": "auto"}]},
            "input[0].content[0].image_url",
        ),
        (
            {"role": "system", "content": [{"type": "input_image", "image_url": "https://x"}]},
            "input[0].content[0].type",
        ),
        ({"role": "user", "content": [{"type": "input_text"}]}, "input[0].content[0].text"),
        (
            {"role": "assistant", "content": [{"type": "input_image", "image_url": "https://x"}]},
            "input[0].content[0].type",
        ),
        ({"role": "tool", "content": "x"}, "input[0].role"),
        ({"role": "user", "content": 3}, "input[0].content"),
        ({"type": "item_reference", "id": "msg_1"}, "input[0].type"),
        ({"type": "web_search_call", "id": "ws_1"}, "input[0].type"),
        ({"type": "function_call", "name": "f", "arguments": "{}"}, "input[0].call_id"),
        ({"type": "function_call", "call_id": "c", "arguments": "{}"}, "input[0].name"),
        ({"type": "function_call_output", "output": "x"}, "input[0].call_id"),
        ({"type": "function_call_output", "call_id": "c", "output": 1}, "input[0].output"),
        (
            {
                "type": "function_call_output",
                "call_id": "c",
                "output": [{"type": "input_image", "image_url": "x"}],
            },
            "input[0].output[0].type",
        ),
        ("text", "input[0]"),
    ],
)
def test_bad_or_unsupported_items_are_refused_naming_them(item: Any, param: str) -> None:
    assert refusal({"input": [item]}).param == param


def test_a_bad_stored_item_is_named_by_the_previous_response() -> None:
    history = [{"id": "x", "type": "file_search_call", "status": "completed"}]
    assert refusal({"input": "hi"}, history).param == "previous_response_id"
