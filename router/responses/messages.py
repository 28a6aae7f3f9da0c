"""Responses items → chat messages (the conversation half of router/responses/to_chat.py).

Each refusal names the item where it is: `input[2].content[0].type` for the request's
own items; `previous_response_id` for the stored conversation it stands for."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from policies.errors import ApiError

_ROLES = ("user", "assistant", "system", "developer")
# Chat takes the image detail levels low/high/auto; `original` (full resolution) is
# closest to `high`.
_DETAILS = {"low": "low", "high": "high", "auto": "auto", "original": "high"}


def chat_messages(items: Sequence[Any], where: str) -> list[dict[str, Any]]:
    """`where`: how a refusal names these items (`input`, or the stored conversation's
    `previous_response_id`, whose items have no index the client knows)."""
    messages: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]" if where == "input" else where
        if not isinstance(item, Mapping):
            raise ApiError("An input item must be an object.", param=at)
        kind = item.get("type", "message" if "role" in item else None)
        if kind == "message":
            messages.append(_message(item, at))
        elif kind == "function_call":
            _add_call(messages, _tool_call(item, at))
        elif kind == "function_call_output":
            messages.append(_tool_result(item, at))
        elif kind != "reasoning":  # a chat backend has no use for another model's reasoning
            raise ApiError(_unsupported_item(kind), param=f"{at}.type" if at != where else at)
    return messages


def _unsupported_item(kind: Any) -> str:
    if kind == "item_reference":
        return "Item references are not supported; use 'previous_response_id'."
    return f"Input items of type '{kind}' are not supported by this server."


def _message(item: Mapping[str, Any], at: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in _ROLES:
        raise ApiError(f"Unknown message role '{role}'.", param=f"{at}.role")
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise ApiError("Message content must be a string or a list.", param=f"{at}.content")
    if role == "assistant":
        # An assistant's earlier answer goes back as one string, which every backend takes.
        return {"role": role, "content": "".join(_assistant_text(content, f"{at}.content"))}
    parts = [_part(part, role, f"{at}.content[{j}]") for j, part in enumerate(content)]
    if len(parts) == 1 and parts[0]["type"] == "text":
        return {"role": role, "content": parts[0]["text"]}
    return {"role": role, "content": parts}


def _assistant_text(content: list[Any], at: str) -> list[str]:
    texts: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        key = {"output_text": "text", "input_text": "text", "refusal": "refusal"}.get(str(kind))
        if key is None:
            raise ApiError(
                f"Assistant content of type '{kind}' is not supported.", param=f"{at}[{j}].type"
            )
        if not isinstance(part.get(key), str):
            raise ApiError(f"'{key}' must be a string.", param=f"{at}[{j}].{key}")
        texts.append(part[key])
    return texts


def _part(part: Any, role: str, at: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, Mapping) else None
    if kind in ("input_text", "output_text"):
        if not isinstance(part.get("text"), str):
            raise ApiError("'text' must be a string.", param=f"{at}.text")
        return {"type": "text", "text": part["text"]}
    if kind == "input_image" and role == "user":
        return _image(part, at)
    if kind == "input_image":
        raise ApiError(f"Images are not supported in {role} messages.", param=f"{at}.type")
    if kind in ("input_file", "input_audio"):
        raise ApiError(
            f"Content parts of type '{kind}' are not supported by this server.",
            param=f"{at}.type",
        )
    raise ApiError(f"Unknown content part type '{kind}'.", param=f"{at}.type")


def _image(part: Mapping[str, Any], at: str) -> dict[str, Any]:
    if part.get("file_id") is not None:
        raise ApiError(
            "Images given by 'file_id' are not supported; send 'image_url'.",
            param=f"{at}.file_id",
        )
    if not isinstance(part.get("image_url"), str):
        raise ApiError("An image needs an 'image_url'.", param=f"{at}.image_url")
    image: dict[str, Any] = {"url": part["image_url"]}
    detail = part.get("detail")
    if detail is not None:
        if detail not in _DETAILS:
            raise ApiError(f"Unknown image detail '{detail}'.", param=f"{at}.detail")
        image["detail"] = _DETAILS[detail]
    return {"type": "image_url", "image_url": image}


def _tool_call(item: Mapping[str, Any], at: str) -> dict[str, Any]:
    for key in ("call_id", "name", "arguments"):
        if not isinstance(item.get(key), str):
            raise ApiError(f"A function call needs a string '{key}'.", param=f"{at}.{key}")
    function = {"name": item["name"], "arguments": item["arguments"]}
    return {"id": item["call_id"], "type": "function", "function": function}


def _add_call(messages: list[dict[str, Any]], call: dict[str, Any]) -> None:
    """A call joins the assistant message just before it: the calls of one turn, and
    the text said with them, are one chat message."""
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant":
        last.setdefault("tool_calls", []).append(call)
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call]})


def _tool_result(item: Mapping[str, Any], at: str) -> dict[str, Any]:
    if not isinstance(item.get("call_id"), str):
        raise ApiError("A function call output needs a 'call_id'.", param=f"{at}.call_id")
    output = item.get("output")
    if isinstance(output, list):
        output = "".join(_output_text(part, f"{at}.output[{k}]") for k, part in enumerate(output))
    if not isinstance(output, str):
        raise ApiError("'output' must be a string or a list of parts.", param=f"{at}.output")
    return {"role": "tool", "tool_call_id": item["call_id"], "content": output}


def _output_text(part: Any, at: str) -> str:
    kind = part.get("type") if isinstance(part, Mapping) else None
    if kind != "input_text":
        raise ApiError(
            f"Function call outputs of type '{kind}' are not supported; only 'input_text'.",
            param=f"{at}.type",
        )
    if not isinstance(part.get("text"), str):
        raise ApiError("'text' must be a string.", param=f"{at}.text")
    return str(part["text"])
