"""A Responses request's `input` as the list of items OpenAI stores and lists
(`GET /v1/responses/{id}/input_items`): a string becomes one user message, a message's
string content becomes parts, and every item gets an id (`msg_`, `fc_`, `fco_` ...).

Only well-formed pieces are rewritten; anything else is left as it came, for the
translation (router/responses/to_chat.py) to refuse with the item named."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policies.errors import ApiError
from router.responses.ids import new_item_id

# Items whose stored form has a `status` (OpenAI lists input items as completed).
_WITH_STATUS = frozenset({"message", "function_call", "function_call_output"})


def input_items(request: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw = request.get("input")
    if raw is None:
        return []
    if isinstance(raw, str):
        return [_item({"type": "message", "role": "user", "content": raw})]
    if not isinstance(raw, list):
        raise ApiError("'input' must be a string or a list of items.", param="input")
    return [_item(item) if isinstance(item, Mapping) else item for item in raw]


def _item(item: Mapping[str, Any]) -> dict[str, Any]:
    normal = dict(item)
    if "type" not in normal and "role" in normal:  # EasyInputMessage leaves `type` out
        normal["type"] = "message"
    kind = normal.get("type")
    if kind == "item_reference":  # it names a stored item: nothing of its own to keep
        return normal
    if kind == "message":
        normal["content"] = _parts(normal.get("role"), normal.get("content"))
    if not normal.get("id"):
        normal["id"] = new_item_id(str(kind))
    if kind in _WITH_STATUS and not normal.get("status"):
        normal["status"] = "completed"
    return normal


def _parts(role: Any, content: Any) -> Any:
    """Content as a list of parts; an assistant's text is `output_text`, as the
    assistant's own output items are."""
    assistant = role == "assistant"
    if isinstance(content, str):
        content = [{"type": "input_text", "text": content}]
    if not isinstance(content, list):
        return content
    parts: list[Any] = []
    for part in content:
        if not isinstance(part, Mapping):
            parts.append(part)
            continue
        normal = dict(part)
        if assistant and normal.get("type") in ("input_text", "output_text"):
            normal["type"] = "output_text"
            normal.setdefault("annotations", [])
            normal.setdefault("logprobs", [])
        elif normal.get("type") == "input_image":
            normal.setdefault("detail", "auto")
        parts.append(normal)
    return parts
