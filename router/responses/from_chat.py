"""A chat completions answer → the Responses `Response` object.

Pure: no I/O. `response_skeleton` is the object before any output (shared with the
stream, router/responses/events.py); the item, usage and logprob mappings below are used
by both the whole and the streamed answer, so the two cannot drift apart."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from router.responses.ids import new_id, new_item_id

# chat finish_reason → Responses `incomplete_details.reason`
INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


def response_skeleton(
    response_id: str,
    request: Mapping[str, Any],
    *,
    created_at: int,
    model: str,
    status: str,
    previous_response_id: str | None = None,
) -> dict[str, Any]:
    """The Response with no output yet; the request's settings echoed as OpenAI does
    (its defaults where the request left them out)."""
    reasoning = request.get("reasoning") or {}
    text = {"format": {"type": "text"}, **(request.get("text") or {})}
    skeleton: dict[str, Any] = {
        "id": response_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": request.get("max_tool_calls"),
        "model": model,
        "output": [],
        "parallel_tool_calls": _given(request, "parallel_tool_calls", True),
        "previous_response_id": previous_response_id,
        "prompt_cache_key": request.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": request.get("safety_identifier"),
        "service_tier": _given(request, "service_tier", "auto"),
        "store": _given(request, "store", True),
        "temperature": _given(request, "temperature", 1.0),
        "text": text,
        "tool_choice": _given(request, "tool_choice", "auto"),
        "tools": [_echoed_tool(tool) for tool in request.get("tools") or ()],
        "top_logprobs": _given(request, "top_logprobs", 0),
        "top_p": _given(request, "top_p", 1.0),
        "truncation": _given(request, "truncation", "disabled"),
        "metadata": dict(request.get("metadata") or {}),
    }
    # The spec types `user` as a string and `usage` as an object: absent, not null, until known.
    if request.get("user") is not None:
        skeleton["user"] = request["user"]
    return skeleton


def response_object(
    response_id: str,
    request: Mapping[str, Any],
    chat: Mapping[str, Any],
    *,
    created_at: int,
    previous_response_id: str | None = None,
    completed_at: int | None = None,
) -> dict[str, Any]:
    """The Response for a whole `chat.completion` (its first choice: Responses has no
    `n`). `completed_at`: when the answer came (`created_at` if not given)."""
    choice = (chat.get("choices") or [{}])[0]
    finish = choice.get("finish_reason")
    response = response_skeleton(
        response_id,
        request,
        created_at=created_at,
        model=str(chat.get("model") or request.get("model") or ""),
        status="completed",
        previous_response_id=previous_response_id,
    )
    item_status = finish_response(response, finish, completed_at or created_at)
    message = choice.get("message") or {}
    text_logprobs = output_logprobs((choice.get("logprobs") or {}).get("content"))
    parts = content_parts(message.get("content"), message.get("refusal"), text_logprobs)
    if parts:
        response["output"].append(message_item(new_item_id("message"), parts, item_status))
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        response["output"].append(
            function_call_item(
                new_item_id("function_call"),
                str(call.get("id") or new_id("call")),
                str(function.get("name") or ""),
                str(function.get("arguments") or ""),
                item_status,
            )
        )
    set_usage(response, chat.get("usage"))
    return response


def output_items(response: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The items a stored response adds to its conversation."""
    return [dict(item) for item in response.get("output") or ()]


def finish_response(response: dict[str, Any], finish_reason: Any, completed_at: int) -> str:
    """Set the status a chat `finish_reason` gives; returns the status of the items it
    cut short (`incomplete` when the answer was cut, else `completed`)."""
    reason = INCOMPLETE_REASONS.get(str(finish_reason))
    if reason is None:
        response["status"] = "completed"
        response["completed_at"] = completed_at
        return "completed"
    response["status"] = "incomplete"
    response["incomplete_details"] = {"reason": reason}
    return "incomplete"


def content_parts(text: Any, refusal: Any, logprobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    if isinstance(text, str) and text:
        parts.append(output_text(text, logprobs))
    if isinstance(refusal, str) and refusal:
        parts.append({"type": "refusal", "refusal": refusal})
    return parts


def output_text(text: str, logprobs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs}


def message_item(item_id: str, parts: list[dict[str, Any]], status: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "message",
        "role": "assistant",
        "status": status,
        "content": parts,
    }


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def set_usage(response: dict[str, Any], chat_usage: Any) -> None:
    """The response's `usage` from chat's (left out when chat reported none)."""
    mapped = usage(chat_usage)
    if mapped is not None:
        response["usage"] = mapped


def usage(chat_usage: Any) -> dict[str, Any] | None:
    if not isinstance(chat_usage, Mapping):
        return None
    prompt = int(chat_usage.get("prompt_tokens") or 0)
    completion = int(chat_usage.get("completion_tokens") or 0)
    prompt_details = chat_usage.get("prompt_tokens_details") or {}
    completion_details = chat_usage.get("completion_tokens_details") or {}
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": int(prompt_details.get("cached_tokens") or 0),
            "cache_write_tokens": int(prompt_details.get("cache_write_tokens") or 0),
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": int(completion_details.get("reasoning_tokens") or 0)
        },
        "total_tokens": int(chat_usage.get("total_tokens") or prompt + completion),
    }


def output_logprobs(chat_logprobs: Any) -> list[dict[str, Any]]:
    """Chat's `logprobs.content` as an `output_text` part's `logprobs` (with bytes)."""
    return [
        {
            **_logprob(entry, with_bytes=True),
            "top_logprobs": [
                _logprob(top, with_bytes=True) for top in entry.get("top_logprobs") or ()
            ],
        }
        for entry in chat_logprobs or ()
    ]


def delta_logprobs(chat_logprobs: Any) -> list[dict[str, Any]]:
    """Chat's `logprobs.content` as a `response.output_text.delta` event's `logprobs`."""
    return [
        {
            **_logprob(entry, with_bytes=False),
            "top_logprobs": [
                _logprob(top, with_bytes=False) for top in entry.get("top_logprobs") or ()
            ],
        }
        for entry in chat_logprobs or ()
    ]


def _logprob(entry: Mapping[str, Any], *, with_bytes: bool) -> dict[str, Any]:
    token = str(entry.get("token") or "")
    result: dict[str, Any] = {"token": token, "logprob": float(entry.get("logprob") or 0.0)}
    if with_bytes:
        raw = entry.get("bytes")
        result["bytes"] = list(raw) if raw is not None else list(token.encode())
    return result


def _echoed_tool(tool: Any) -> Any:
    """A function tool as the spec echoes it: `parameters` and `strict` always there (null
    when not given: Turnout forwards no `strict` the request did not set)."""
    if not isinstance(tool, Mapping) or tool.get("type") != "function":
        return tool
    return {"parameters": None, "strict": None, **tool}


def _given(request: Mapping[str, Any], key: str, default: Any) -> Any:
    value = request.get(key)
    return default if value is None else value


# The codes a Response's `error` may carry (`ResponseErrorCode`): an upstream error's own
# code when it is one of them, a rate limit as such, anything else a server error.
_ERROR_CODES = frozenset(
    {
        "server_error", "rate_limit_exceeded", "invalid_prompt", "vector_store_timeout",
        "invalid_image", "invalid_image_format", "invalid_base64_image", "invalid_image_url",
        "image_too_large", "image_too_small", "image_parse_error",
        "image_content_policy_violation", "invalid_image_mode", "image_file_too_large",
        "unsupported_image_media_type", "empty_image_file", "failed_to_download_image",
        "image_file_not_found",
    }
)  # fmt: skip


def response_error(error: Mapping[str, Any]) -> dict[str, Any]:
    """A Response's `error` for an OpenAI error envelope (or its inner `error`)."""
    if isinstance(error.get("error"), Mapping):
        error = error["error"]
    code = str(error.get("code") or "")
    if code not in _ERROR_CODES:
        limited = "rate_limit" in code or error.get("type") in ("rate_limit_error", "requests")
        code = "rate_limit_exceeded" if limited else "server_error"
    message = error.get("message")
    return {"code": code, "message": str(message or "The response failed.")}
