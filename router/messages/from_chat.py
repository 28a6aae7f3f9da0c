"""A chat completions answer → an Anthropic `message`; Turnout's errors → Anthropic's.

Pure: no I/O. The stop reason, usage and error mappings are shared with the stream
(router/messages/events.py), so the whole and the streamed answer cannot drift apart;
they read providers/anthropic/'s tables (Anthropic → chat) the other way.

- Content: the text (and a `refusal`, as text) is one `text` block, each tool call a
  `tool_use` block (`input`: its parsed arguments; arguments that are not a JSON object
  give `{}`, as Anthropic's input is always one). A backend's reasoning
  (`reasoning_content`) is left out: a `thinking` block needs Anthropic's signature,
  and a made-up one would be refused when the client sends it back to Anthropic.
- `stop_reason`: stop → `end_turn`, length → `max_tokens`, tool_calls → `tool_use`,
  content_filter (or a `refusal`) → `refusal`. Chat does not say which stop string
  ended the answer, except vLLM, whose choice carries it as `stop_reason`: when that is
  one of the request's `stop_sequences`, the reason is `stop_sequence` with it as
  `stop_sequence`; otherwise `end_turn` with `stop_sequence: null`.
- `usage`: chat's `prompt_tokens` counts cached tokens, Anthropic's `input_tokens` does
  not: `cache_read_input_tokens` is `prompt_tokens_details.cached_tokens`,
  `cache_creation_input_tokens` its `cache_write_tokens` (0 when not said), and
  `input_tokens` what remains.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from providers.anthropic.errors import ERROR_TYPES, STATUS_TYPES
from providers.anthropic.wire import FINISH_REASONS

# chat finish_reason → Anthropic stop_reason: the first Anthropic reason listed for each
# (end_turn for stop, max_tokens for length); `function_call` is chat's older tool_calls.
STOP_REASONS = {chat: ours for ours, chat in reversed(FINISH_REASONS.items())}
STOP_REASONS["function_call"] = "tool_use"
# The status Anthropic's clients expect for one of Turnout's: the adapter reads
# Anthropic's 529 as 503 (providers/anthropic/errors.py), so 503 goes out as 529.
_STATUSES = {503: 529}
# Anthropic's error type for an HTTP status: the adapter's table, with the statuses it
# does not list (Anthropic's SDK knows `timeout_error` and `billing_error` too).
_STATUS_TYPES = {**STATUS_TYPES, 402: "billing_error", 500: "api_error", 504: "timeout_error"}
# Anthropic's error type for an OpenAI-side one: the adapter's table read the other way,
# and Turnout's own types for a limit (`requests`, `tokens`) or no deployment left.
_ERROR_TYPES = {
    **{theirs: ours for ours, (theirs, _code, _status) in ERROR_TYPES.items()},
    **{ours: ours for ours in ERROR_TYPES},
    "requests": "rate_limit_error",
    "tokens": "rate_limit_error",
    "service_unavailable": "overloaded_error",
    "timeout_error": "timeout_error",
}


def new_message_id() -> str:
    return f"msg_{secrets.token_hex(12)}"


def new_tool_use_id() -> str:
    return f"toolu_{secrets.token_hex(12)}"


def message_skeleton(message_id: str, model: str, usage: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": dict(usage),
    }


def message_object(
    message_id: str, chat: Mapping[str, Any], *, model: str, stop_sequences: Sequence[str] = ()
) -> dict[str, Any]:
    """The message for a whole `chat.completion` (its first choice: Anthropic has no
    `n`). `model`: the name the client asked for; `stop_sequences`: the request's."""
    choice = (chat.get("choices") or [{}])[0]
    reply = choice.get("message") or {}
    message = message_skeleton(message_id, model, usage(chat.get("usage")))
    text = "".join(t for t in (reply.get("content"), reply.get("refusal")) if isinstance(t, str))
    if text:
        message["content"].append(text_block(text))
    for call in reply.get("tool_calls") or ():
        function = call.get("function") or {}
        message["content"].append(
            tool_use_block(
                str(call.get("id") or new_tool_use_id()),
                str(function.get("name") or ""),
                tool_input(function.get("arguments")),
            )
        )
    reason, sequence = stop_reason(choice, stop_sequences)
    if reply.get("refusal"):
        reason = "refusal"
    message.update(stop_reason=reason, stop_sequence=sequence)
    return message


def text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def tool_use_block(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments as Anthropic's `input`: `{}` when they are not a JSON
    object (a truncated answer, or a backend's malformed call)."""
    try:
        parsed = orjson.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def stop_reason(choice: Mapping[str, Any], stop_sequences: Sequence[str]) -> tuple[str, str | None]:
    """(`stop_reason`, `stop_sequence`) for a chat choice's `finish_reason` (and vLLM's
    matched `stop_reason`, see the module docstring)."""
    finish = choice.get("finish_reason")
    matched = choice.get("stop_reason")
    if finish == "stop" and isinstance(matched, str) and matched in stop_sequences:
        return "stop_sequence", matched
    return STOP_REASONS.get(str(finish), "end_turn"), None


def usage(chat_usage: Any) -> dict[str, int]:
    fields: Mapping[str, Any] = chat_usage if isinstance(chat_usage, Mapping) else {}
    details = fields.get("prompt_tokens_details") or {}
    read = int(details.get("cached_tokens") or 0)
    written = int(details.get("cache_write_tokens") or 0)
    prompt = int(fields.get("prompt_tokens") or 0)
    return {
        "input_tokens": max(prompt - read - written, 0),
        "output_tokens": int(fields.get("completion_tokens") or 0),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": read,
    }


def error_body(status: int, message: str) -> tuple[int, dict[str, Any]]:
    """Anthropic's status and error envelope for an error Turnout answers with `status`:
    a 503 (no deployment could answer) is Anthropic's 529 overloaded; a status it has no
    type for is an `invalid_request_error` when a 4xx, else an `api_error` (499, the
    client gone, keeps its status)."""
    status = _STATUSES.get(status, status)
    kind = _STATUS_TYPES.get(status)
    if kind is None:
        kind = "invalid_request_error" if 400 <= status < 500 and status != 499 else "api_error"
    return status, {"type": "error", "error": {"type": kind, "message": message}}


def stream_error(error: Mapping[str, Any]) -> dict[str, Any]:
    """The `error` event for an OpenAI error envelope (or its inner `error`) that ends a
    stream: its type in Anthropic's terms (a limit → `rate_limit_error`, no deployment
    → `overloaded_error`, anything unknown → `api_error`)."""
    if isinstance(error.get("error"), Mapping):
        error = error["error"]
    kind = _ERROR_TYPES.get(str(error.get("type")))
    if kind is None:
        kind = "rate_limit_error" if "rate_limit" in str(error.get("code")) else "api_error"
    message = str(error.get("message") or "The stream failed.")
    return {"type": "error", "error": {"type": kind, "message": message}}
