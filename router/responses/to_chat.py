"""A Responses request (`CreateResponse`) → one chat completions request.

Pure: no I/O. The conversation's earlier items (`history`, expanded from
`previous_response_id` by the door) come first, then `input`; `instructions` is the first
message (`system`, which every backend takes; OpenAI's own `developer` is not).

Items: `message` (user/system/developer parts `input_text`, `input_image`; assistant
parts `output_text`, `refusal`), `function_call` (consecutive calls, and the assistant
text just before them, are one assistant message with `tool_calls`),
`function_call_output` (a `tool` message); `reasoning` items are skipped. Refused
always (the conversation itself would change): `input_file` and `input_audio` parts,
images given by `file_id`, images in system/developer messages, `item_reference` and
every other item type.

Options refused with a 400 naming them, or dropped (and listed) under `drop`: tools other
than `function` (`tools[i].type`), a `tool_choice` other than a mode or a named function,
`background: true`, `conversation`, `prompt`, `truncation: "auto"`,
`context_management`, and `include` values other than `message.output_text.logprobs`
(honoured: chat logprobs), `reasoning.encrypted_content` and
`message.input_image.image_url` (nothing to add: no reasoning items come back, and
input images are stored as given).

Ignored: `store` (Turnout's own storage, not the backend's), `max_tool_calls` and
`stream_options` (they concern built-in tools and obfuscation, which never occur here),
`reasoning.summary` (chat has no summaries; none come back).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from policies.errors import ApiError
from router.responses.input import input_items
from router.responses.messages import chat_messages

__all__ = ["chat_request", "input_items"]

# Responses fields carried onto chat under the same name.
_CARRIED = (
    "model", "temperature", "top_p", "user", "metadata", "safety_identifier",
    "prompt_cache_key", "prompt_cache_retention", "prompt_cache_options", "service_tier",
    "moderation",
)  # fmt: skip
_HONOURED_INCLUDES = frozenset(
    {"message.output_text.logprobs", "reasoning.encrypted_content", "message.input_image.image_url"}
)


def chat_request(
    request: Mapping[str, Any], history: Sequence[Mapping[str, Any]] = (), *, drop: bool = False
) -> tuple[dict[str, Any], list[str]]:
    """The chat completions body for `request` after `history`, and the request fields
    dropped (under `drop`; without it they are refused with `ApiError`)."""
    dropped: list[str] = []
    _refuse_or_drop_fields(request, drop, dropped)
    messages = chat_messages(history, "previous_response_id")
    messages += chat_messages(input_items(request), "input")
    if isinstance(request.get("instructions"), str):
        messages.insert(0, {"role": "system", "content": request["instructions"]})
    if not messages:
        raise ApiError("'input' is required.", param="input")
    chat: dict[str, Any] = {"messages": messages}
    chat.update({key: request[key] for key in _CARRIED if request.get(key) is not None})
    _tool_options(chat, request, drop, dropped)
    _text_options(chat, request.get("text"))
    _output_options(chat, request)
    return chat, dropped


def _refuse_or_drop_fields(request: Mapping[str, Any], drop: bool, dropped: list[str]) -> None:
    def unsupported(param: str, message: str) -> None:
        if not drop:
            raise ApiError(message, param=param)
        dropped.append(param)

    if request.get("background") is True:
        unsupported("background", "Background responses are not supported by this server.")
    for field in ("conversation", "prompt", "context_management"):
        if request.get(field) is not None:
            unsupported(field, f"'{field}' is not supported by this server.")
    if request.get("truncation") == "auto":
        unsupported("truncation", "'truncation: auto' is not supported by this server.")
    for i, value in enumerate(request.get("include") or ()):
        if value not in _HONOURED_INCLUDES:
            unsupported(f"include[{i}]", f"'include' value '{value}' is not supported.")


def _tool_options(
    chat: dict[str, Any], request: Mapping[str, Any], drop: bool, dropped: list[str]
) -> None:
    tools: list[dict[str, Any]] = []
    for i, tool in enumerate(request.get("tools") or ()):
        if not isinstance(tool, Mapping):
            raise ApiError("A tool must be an object.", param=f"tools[{i}]")
        if tool.get("type") == "function":
            tools.append(_function_tool(tool, i))
        elif drop:
            dropped.append(f"tools[{i}]")
        else:
            raise ApiError(
                f"Tools of type '{tool.get('type')}' are not supported by this server; "
                "only 'function' tools are.",
                param=f"tools[{i}].type",
            )
    # Chat refuses `tool_choice` and `parallel_tool_calls` without tools: with none left,
    # there is nothing for them to say.
    if not tools:
        return
    chat["tools"] = tools
    choice = _tool_choice(request.get("tool_choice"), drop, dropped)
    if choice is not None:
        chat["tool_choice"] = choice
    if request.get("parallel_tool_calls") is not None:
        chat["parallel_tool_calls"] = request["parallel_tool_calls"]


def _function_tool(tool: Mapping[str, Any], i: int) -> dict[str, Any]:
    if not isinstance(tool.get("name"), str) or not tool["name"]:
        raise ApiError("A function tool needs a 'name'.", param=f"tools[{i}].name")
    function: dict[str, Any] = {"name": tool["name"]}
    # `strict` is left out when not given: Responses defaults it to true, chat to false,
    # and a strict schema is refused by backends that cannot enforce it.
    for key in ("description", "parameters", "strict"):
        if tool.get(key) is not None:
            function[key] = tool[key]
    return {"type": "function", "function": function}


def _tool_choice(choice: Any, drop: bool, dropped: list[str]) -> Any:
    if choice is None or choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        if not isinstance(choice.get("name"), str):
            raise ApiError("A function tool choice needs a 'name'.", param="tool_choice.name")
        return {"type": "function", "function": {"name": choice["name"]}}
    if drop:
        dropped.append("tool_choice")
        return None
    raise ApiError(
        "Only 'auto', 'none', 'required' or a named function tool choice is supported.",
        param="tool_choice",
    )


def _text_options(chat: dict[str, Any], text: Any) -> None:
    if not isinstance(text, Mapping):
        return
    if text.get("verbosity") is not None:
        chat["verbosity"] = text["verbosity"]
    form = text.get("format")
    if not isinstance(form, Mapping) or form.get("type") in (None, "text"):
        return
    if form["type"] == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif form["type"] == "json_schema":
        schema = {k: form[k] for k in ("name", "schema", "strict", "description") if k in form}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    else:
        raise ApiError(f"Unknown text format '{form['type']}'.", param="text.format.type")


def _output_options(chat: dict[str, Any], request: Mapping[str, Any]) -> None:
    if request.get("max_output_tokens") is not None:
        chat["max_completion_tokens"] = request["max_output_tokens"]
    reasoning = request.get("reasoning")
    if isinstance(reasoning, Mapping) and reasoning.get("effort") is not None:
        chat["reasoning_effort"] = reasoning["effort"]
    if "message.output_text.logprobs" in (request.get("include") or ()):
        chat["logprobs"] = True
    if request.get("top_logprobs") is not None:
        chat["logprobs"] = True
        chat["top_logprobs"] = request["top_logprobs"]
    if request.get("stream") is True:
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
