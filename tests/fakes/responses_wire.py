"""OpenAI's Responses API as the fake upstream speaks it natively (`POST /v1/responses`,
as OpenAI itself and vLLM do): a whole answer is a Response object, a stream the standard
event sequence ending with `response.completed` (no `[DONE]`: the server closes it).

The answer echoes the last user message of `input` (``echo: <text>``), so a test sees what
reached the model. Ids begin ``resp_upstream`` and ``msg_upstream``: a client seeing one
got the upstream's id, not the router's."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

Json = dict[str, Any]


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _echo(items: Any) -> tuple[str, int]:
    """``echo: `` and the last user message's text; the words of every input item."""
    if isinstance(items, str):
        return "echo: " + items, len(items.split())
    said = [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []
    users = [i for i in said if i.get("role") == "user"]
    words = sum(len(_text_of(i.get("content")).split()) for i in said)
    return "echo: " + (_text_of(users[-1].get("content")) if users else ""), words


def _response(body: Json, rid: str, status: str, output: list[Json], usage: Json | None) -> Json:
    """A Response object echoing the request's settings, as OpenAI's does."""
    response: Json = {
        "id": rid,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": body["model"],
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": None, "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": "disabled",
        "metadata": body.get("metadata") or {},
    }
    if usage is not None:
        response["usage"] = usage
    return response


def responses(body: Json, text: str | None) -> Json | list[str]:
    """The whole Response, or a stream's ``data:`` payloads (see the module docstring)."""
    if not isinstance(body.get("model"), str):
        from .wire import invalid  # here: wire imports this module

        raise invalid("you must provide a model parameter", "model")
    echo, words = _echo(body.get("input"))
    text = echo if text is None else text
    rid, mid = f"resp_upstream{uuid.uuid4().hex}", f"msg_upstream{uuid.uuid4().hex}"
    out = len(text.split())
    usage = {
        "input_tokens": words,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": out,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": words + out,
    }
    part: Json = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    done: Json = {"id": mid, "type": "message", "role": "assistant", "status": "completed"}
    done["content"] = [part]
    if not body.get("stream"):
        return _response(body, rid, "completed", [done], usage)
    return _events(body, rid, done, usage)


def _events(body: Json, rid: str, done: Json, usage: Json) -> list[str]:
    mid, part = done["id"], done["content"][0]
    at = {"item_id": mid, "output_index": 0, "content_index": 0}
    started = {**done, "status": "in_progress", "content": []}
    events: list[Json] = [
        {"type": "response.created", "response": _response(body, rid, "in_progress", [], None)},
        {"type": "response.in_progress", "response": _response(body, rid, "in_progress", [], None)},
        {"type": "response.output_item.added", "output_index": 0, "item": started},
        {"type": "response.content_part.added", **at, "part": {**part, "text": ""}},
        *(
            {"type": "response.output_text.delta", **at, "delta": piece, "logprobs": []}
            for piece in re.findall(r"\s*\S+|\s+$", part["text"])
        ),
        {"type": "response.output_text.done", **at, "text": part["text"], "logprobs": []},
        {"type": "response.content_part.done", **at, "part": part},
        {"type": "response.output_item.done", "output_index": 0, "item": done},
        {
            "type": "response.completed",
            "response": _response(body, rid, "completed", [done], usage),
        },
    ]
    return [_dumps({**event, "sequence_number": i}) for i, event in enumerate(events)]
