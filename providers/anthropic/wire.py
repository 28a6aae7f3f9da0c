"""Pure translation between OpenAI's chat wire format and Anthropic's Messages API.

`to_wire` refuses (400) the options Anthropic has no equivalent of rather than dropping
them: emulating or discarding them is the translation layer's decision, made before a
request reaches this adapter — which is why the keys it takes are declared
(`ACCEPTED_KEYS`, in the adapter's capabilities), so the planner knows them beforehand.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from providers.anthropic.errors import invalid, unsupported
from providers.types import JSONObject

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    # The answer was cut short: by the context window, or paused by Anthropic mid-turn
    # (long server-tool runs; the caller would have to send it back to go on).
    "model_context_window_exceeded": "length",
    "pause_turn": "length",
}
# Forwarded as they are, or handled by the adapter (`stream_options`).
_TRANSLATED = frozenset(
    {
        "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p",
        "top_k", "stop", "stream", "stream_options", "tools", "tool_choice",
        "parallel_tool_calls", "user", "n",
    }
)  # fmt: skip
# OpenAI bookkeeping with no effect on the answer itself; and vLLM's keys asking to continue
# the final assistant message, which is what Anthropic does with one anyway (its prefill).
_IGNORED = frozenset(
    {"store", "metadata", "service_tier", "continue_final_message", "add_generation_prompt"}
)
# Options whose "off" value is harmless: anything else is refused.
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "logprobs": (False,),
    "frequency_penalty": (0, 0.0),
    "presence_penalty": (0, 0.0),
    "response_format": ({"type": "text"},),
}
# Every key `to_wire` takes (some only with a neutral value): anything else is refused.
ACCEPTED_KEYS = _TRANSLATED | _IGNORED | frozenset(_NEUTRAL)


def finish_reason(stop_reason: Any) -> str:
    return FINISH_REASONS.get(str(stop_reason), "stop")


def usage(fields: Mapping[str, Any], output_tokens: int | None = None) -> JSONObject:
    """OpenAI usage from Anthropic's, whose `input_tokens` leaves out cached tokens: the
    cache's reads are OpenAI's `cached_tokens`, its writes `cache_write_tokens` (the name
    OpenAI-compatible gateways give them; the Messages door reads it back)."""
    prompt = sum(
        int(fields.get(key) or 0)
        for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )
    completion = int(fields.get("output_tokens") or 0) if output_tokens is None else output_tokens
    shaped: JSONObject = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    details: JSONObject = {}
    if "cache_read_input_tokens" in fields:  # prompt-cache hits: OpenAI's name for them
        details["cached_tokens"] = int(fields.get("cache_read_input_tokens") or 0)
    if fields.get("cache_creation_input_tokens"):  # billed above the prompt (pricing)
        details["cache_write_tokens"] = int(fields.get("cache_creation_input_tokens") or 0)
    if details:
        shaped["prompt_tokens_details"] = details
    return shaped


def to_wire(
    body: Mapping[str, Any], *, default_max_tokens: int = 4096
) -> tuple[JSONObject, list[str]]:
    """The Anthropic request for an OpenAI chat body, and the options that were clamped."""
    _refuse_unsupported(body)
    clamped: list[str] = []
    system, messages = _messages(body.get("messages"))
    wire: JSONObject = {"model": body.get("model"), "messages": messages}
    if system:
        wire["system"] = system
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    wire["max_tokens"] = limit if limit is not None else default_max_tokens
    stops = _stop_sequences(body.get("stop"))
    if stops:
        wire["stop_sequences"] = stops
    temperature = body.get("temperature")
    if temperature is not None:
        if temperature > 1:
            temperature = 1
            clamped.append("temperature")
        wire["temperature"] = temperature
    for key in ("top_p", "top_k"):
        if body.get(key) is not None:
            wire[key] = body[key]
    if body.get("user") is not None:
        wire["metadata"] = {"user_id": body["user"]}
    if body.get("tools"):
        wire["tools"] = [_tool(tool) for tool in body["tools"]]
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None:
        wire["tool_choice"] = choice
    if body.get("stream"):
        wire["stream"] = True
    return wire, clamped


def from_wire(message: Mapping[str, Any], model: str, *, created: int | None = None) -> JSONObject:
    """The OpenAI `chat.completion` for an Anthropic message."""
    texts: list[str] = []
    tool_calls: list[JSONObject] = []
    for block in message.get("content") or ():
        if block.get("type") == "text":
            texts.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            tool_calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    reply: JSONObject = {
        "role": "assistant",
        "content": "".join(texts) if texts or not tool_calls else None,
        "refusal": None,
    }
    if tool_calls:
        reply["tool_calls"] = tool_calls
    return {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": message.get("model") or model,
        "choices": [
            {
                "index": 0,
                "message": reply,
                "logprobs": None,
                "finish_reason": finish_reason(message.get("stop_reason")),
            }
        ],
        "usage": usage(message.get("usage") or {}),
    }


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    for key, value in body.items():
        if key in _TRANSLATED or key in _IGNORED or value is None:
            continue
        if value in _NEUTRAL.get(key, ()):
            continue
        raise unsupported(key)
    n = body.get("n")
    if n is not None and n != 1:
        raise unsupported("n", "only n=1")


def _messages(raw: Any) -> tuple[str, list[JSONObject]]:
    """`system` text, and user/assistant turns that alternate (same-role runs merged)."""
    if not isinstance(raw, list):
        raise invalid("`messages` must be a list", "messages")
    system: list[str] = []
    turns: list[JSONObject] = []
    for i, message in enumerate(raw):
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_plain_text(message.get("content"), f"messages[{i}].content"))
            continue
        if role == "user":
            blocks = _user_blocks(message.get("content"), i)
        elif role == "assistant":
            blocks = _assistant_blocks(message, i)
        elif role == "tool":
            role, blocks = "user", [_tool_result(message, i)]
        else:
            raise unsupported(f"messages[{i}].role", f"role {role!r}")
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    return "\n\n".join(system), turns


def _plain_text(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for part in content:
        if part.get("type") != "text":
            raise unsupported(f"{where}[].type", f"only text parts here, got {part.get('type')!r}")
        texts.append(part.get("text", ""))
    return "\n".join(texts)


def _user_blocks(content: Any, i: int) -> list[JSONObject]:
    if content is None or isinstance(content, str):
        return [{"type": "text", "text": content or ""}]
    blocks: list[JSONObject] = []
    for part in content:
        kind = part.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            blocks.append(_image(part.get("image_url") or {}, i))
        else:
            raise unsupported(f"messages[{i}].content[].type", f"part type {kind!r}")
    return blocks


def _image(image_url: Mapping[str, Any], i: int) -> JSONObject:
    url = str(image_url.get("url") or "")
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type, _, encoding = header.removeprefix("data:").partition(";")
        if encoding != "base64" or not data:
            raise invalid("image data URLs must be base64", f"messages[{i}].content")
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise invalid("image_url must be a data: or http(s) URL", f"messages[{i}].content")


def _assistant_blocks(message: Mapping[str, Any], i: int) -> list[JSONObject]:
    blocks: list[JSONObject] = []
    content = message.get("content")
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    for part in content or ():
        text = part.get("text") if part.get("type") == "text" else part.get("refusal")
        if text:  # Anthropic rejects empty text blocks
            blocks.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or ():
        if call.get("type", "function") != "function":  # a custom tool's call: no equivalent
            raise unsupported(f"messages[{i}].tool_calls[].type", f"tool call {call['type']!r}")
        function = call.get("function") or {}
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            arguments = None
        if not isinstance(arguments, dict):
            raise invalid("tool call arguments must be a JSON object", f"messages[{i}].tool_calls")
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": arguments,
            }
        )
    return blocks


def _tool_result(message: Mapping[str, Any], i: int) -> JSONObject:
    return {
        "type": "tool_result",
        "tool_use_id": message.get("tool_call_id"),
        "content": _plain_text(message.get("content"), f"messages[{i}].content"),
    }


def _stop_sequences(stop: Any) -> list[str]:
    """Anthropic refuses whitespace-only stop sequences: the planner has them matched by
    Turnout instead, so one here is a 400, never silently dropped. An empty one matches
    nothing and is left out."""
    stops = [s for s in ([stop] if isinstance(stop, str) else list(stop or ())) if s]
    if any(not s.strip() for s in stops):
        raise unsupported("stop", "whitespace-only stop sequences")
    return stops


def _tool(tool: Mapping[str, Any]) -> JSONObject:
    if tool.get("type") != "function":
        raise unsupported("tools[].type", f"tool type {tool.get('type')!r}")
    function = tool.get("function") or {}
    wire: JSONObject = {"name": function.get("name")}
    if function.get("description"):
        wire["description"] = function["description"]
    wire["input_schema"] = function.get("parameters") or {"type": "object", "properties": {}}
    return wire


def _tool_choice(choice: Any, parallel: Any) -> JSONObject | None:
    wire: JSONObject | None
    if choice is None:
        wire = None
    elif choice == "auto":
        wire = {"type": "auto"}
    elif choice == "required":
        wire = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        wire = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    else:
        raise unsupported("tool_choice", f"value {choice!r}")
    if parallel is False:
        wire = {**(wire or {"type": "auto"}), "disable_parallel_tool_use": True}
    return wire
