"""Anthropic `messages[]` and their content blocks → chat messages (the conversation half
of router/messages/to_chat.py).

Pure: no I/O. Each refusal names where it is (`messages[2].content[0].type`).

- `system` messages (a system turn mid-conversation; Claude Code sends its environment
  this way) → chat `system` messages in the same place, their text blocks joined with a
  newline.
- `text` blocks → text parts; a user message of text only is one string, its blocks
  joined with a newline (the form every backend and chat template takes; vLLM joins
  text parts the same way). An assistant's text blocks are one string, joined as they
  are: they are runs of one answer, split only by its tool calls.
- `image` (user messages and nothing else: chat has no images elsewhere) → an
  `image_url` part: a base64 source as a `data:` URL, a `url` source as it is. Images
  given by `file_id` are refused (Turnout has no Anthropic Files API to read them from).
- `tool_use` (assistant) → the message's `tool_calls`, `arguments` the JSON of `input`.
- `tool_result` (user) → one `tool` message per result, before the rest of the user
  message (chat wants them right after the assistant's calls; Anthropic puts them
  first anyway). Their content: the string, or the text blocks joined with a newline;
  `is_error: true` is said in the content itself, which starts with `TOOL_ERROR_PREFIX`
  (chat's `tool` message has no error flag).
- `thinking` and `redacted_thinking` (assistant history) are left out: their signatures
  are Anthropic's and a chat backend has no field for another model's reasoning. They
  are not listed as dropped: every multi-turn conversation with thinking has them, and
  they do not change what the backend is asked.
- Every other block (`document`, `search_result`, server-tool blocks, images inside a
  tool result) is refused (400 naming it), or left out and listed under `drop`.
- `cache_control` on any block is removed and listed once (`cache_control`), whatever
  the mode: it is a hint about cost, never about the answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from policies.errors import ApiError

TOOL_ERROR_PREFIX = "Error: "
# Assistant history the chat form leaves out (see the module docstring).
_REASONING_BLOCKS = frozenset({"thinking", "redacted_thinking"})


@dataclass(slots=True)
class Drops:
    """What a request loses on its way to chat: refused (an `ApiError` naming the
    parameter), or, under `drop`, listed by what was left out (`tools[1]` for a refusal
    that would have named `tools[1].type`)."""

    drop: bool
    names: list[str] = field(default_factory=list)

    def unsupported(self, param: str, message: str) -> None:
        if not self.drop:
            raise ApiError(message, param=param)
        self.names.append(param.removesuffix(".type"))

    def note_cache_control(self, block: Mapping[str, Any]) -> None:
        if block.get("cache_control") is not None and "cache_control" not in self.names:
            self.names.append("cache_control")


def chat_messages(messages: Any, drops: Drops) -> list[dict[str, Any]]:
    if not isinstance(messages, Sequence) or isinstance(messages, str) or not messages:
        raise ApiError("'messages' must be a non-empty list.", param="messages")
    chat: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        at = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise ApiError("A message must be an object.", param=at)
        role = message.get("role")
        content = message.get("content")
        if role == "system":  # a system turn mid-conversation: chat has the same
            chat.append({"role": "system", "content": _system_turn(content, at, drops)})
            continue
        if role not in ("user", "assistant"):
            raise ApiError(f"Unknown message role '{role}'.", param=f"{at}.role")
        if isinstance(content, str):
            chat.append({"role": role, "content": content})
            continue
        if not isinstance(content, list):
            raise ApiError("'content' must be a string or a list.", param=f"{at}.content")
        if role == "user":
            chat += _user(content, f"{at}.content", drops)
        else:
            chat.append(_assistant(content, f"{at}.content", drops))
    return chat


def system_text(system: Any, drops: Drops) -> str | None:
    """The system prompt as one string; Claude Code's `x-anthropic-billing-header` block
    is left out, as vLLM does: it carries a per-request hash that defeats prefix caching
    and says nothing to the model."""
    if system is None or isinstance(system, str):
        return system
    if not isinstance(system, list):
        raise ApiError("'system' must be a string or a list of text blocks.", param="system")
    texts: list[str] = []
    for i, block in enumerate(system):
        text = _text(block, f"system[{i}]")
        drops.note_cache_control(block)
        if not text.startswith("x-anthropic-billing-header"):
            texts.append(text)
    return "\n".join(texts)


def _system_turn(content: Any, at: str, drops: Drops) -> str:
    """A `system` message's text (a string or text blocks, joined with a newline)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise ApiError("'content' must be a string or a list.", param=f"{at}.content")
    for block in content:
        if isinstance(block, Mapping):
            drops.note_cache_control(block)
    return "\n".join(_text(block, f"{at}.content[{j}]") for j, block in enumerate(content))


def _user(content: list[Any], at: str, drops: Drops) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        where = f"{at}[{j}]"
        kind = _kind(block, where)
        drops.note_cache_control(block)
        if kind == "text":
            parts.append({"type": "text", "text": _text(block, where)})
        elif kind == "image":
            parts.append(_image(block, where))
        elif kind == "tool_result":
            results.append(_tool_result(block, where, drops))
        else:
            drops.unsupported(f"{where}.type", _unsupported(kind, "user"))
    if not parts:
        return results
    if all(part["type"] == "text" for part in parts):
        return [*results, {"role": "user", "content": "\n".join(p["text"] for p in parts)}]
    return [*results, {"role": "user", "content": parts}]


def _assistant(content: list[Any], at: str, drops: Drops) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for j, block in enumerate(content):
        where = f"{at}[{j}]"
        kind = _kind(block, where)
        drops.note_cache_control(block)
        if kind == "text":
            texts.append(_text(block, where))
        elif kind == "tool_use":
            calls.append(_tool_call(block, where))
        elif kind not in _REASONING_BLOCKS:
            drops.unsupported(f"{where}.type", _unsupported(kind, "assistant"))
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if calls:
        message["tool_calls"] = calls
        if not texts:
            message["content"] = None
    return message


def _kind(block: Any, where: str) -> str:
    if not isinstance(block, Mapping):
        raise ApiError("A content block must be an object.", param=where)
    kind = block.get("type")
    if not isinstance(kind, str):
        raise ApiError("A content block needs a 'type'.", param=f"{where}.type")
    return kind


def _unsupported(kind: str, role: str) -> str:
    return f"Content blocks of type '{kind}' in {role} messages are not supported by this model."


def _text(block: Any, where: str) -> str:
    if _kind(block, where) != "text":
        raise ApiError("Only 'text' blocks are allowed here.", param=f"{where}.type")
    if not isinstance(block.get("text"), str):
        raise ApiError("'text' must be a string.", param=f"{where}.text")
    return str(block["text"])


def _image(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, Mapping) else None
    if kind == "base64" and isinstance(source, Mapping):
        media_type, data = source.get("media_type"), source.get("data")
        if not isinstance(media_type, str) or not isinstance(data, str):
            raise ApiError("A base64 image needs 'media_type' and 'data'.", param=f"{where}.source")
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    if kind == "url" and isinstance(source, Mapping) and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    if kind == "file":
        raise ApiError(
            "Images given by 'file_id' are not supported; send them as base64 or a URL.",
            param=f"{where}.source.type",
        )
    raise ApiError("An image needs a 'base64' or 'url' source.", param=f"{where}.source")


def _tool_call(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    for key in ("id", "name"):
        if not isinstance(block.get(key), str):
            raise ApiError(f"A tool_use block needs a string '{key}'.", param=f"{where}.{key}")
    arguments = block.get("input")
    if not isinstance(arguments, Mapping):
        raise ApiError("A tool_use block's 'input' must be an object.", param=f"{where}.input")
    function = {"name": block["name"], "arguments": orjson.dumps(arguments).decode()}
    return {"id": block["id"], "type": "function", "function": function}


def _tool_result(block: Mapping[str, Any], where: str, drops: Drops) -> dict[str, Any]:
    if not isinstance(block.get("tool_use_id"), str):
        raise ApiError("A tool_result needs a 'tool_use_id'.", param=f"{where}.tool_use_id")
    content = block.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = "\n".join(_result_texts(content, f"{where}.content", drops))
    else:
        raise ApiError(
            "A tool_result's 'content' must be a string or a list.", param=f"{where}.content"
        )
    if block.get("is_error") is True:
        text = TOOL_ERROR_PREFIX + text
    return {"role": "tool", "tool_call_id": block["tool_use_id"], "content": text}


def _result_texts(content: list[Any], at: str, drops: Drops) -> list[str]:
    texts: list[str] = []
    for k, part in enumerate(content):
        where = f"{at}[{k}]"
        kind = _kind(part, where)
        drops.note_cache_control(part)
        if kind == "text":
            texts.append(_text(part, where))
        else:
            # A chat `tool` message carries text only.
            drops.unsupported(
                f"{where}.type", f"Tool results of type '{kind}' are not supported by this model."
            )
    return texts
