"""OpenAI wire-format payload builders used by :mod:`tests.fakes.openai_upstream`.

Each builder takes the parsed request body and an optional answer override and returns
either a JSON object or, for ``stream: true``, the list of SSE ``data:`` payloads
(ending with ``[DONE]``). Invalid requests raise :class:`InvalidRequest`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import struct
import time
import uuid
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from .behaviors import Status, ToolCall
from .logprobs import completion_logprobs, prompt_logprobs
from .responses_wire import responses

Json = dict[str, Any]
#: OpenAI's spec types `system_fingerprint` as a string (never null).
FINGERPRINT: Final = "fp_fake"


class InvalidRequest(Exception):
    """Raised by the builders; the server answers with ``status``."""

    def __init__(self, status: Status) -> None:
        super().__init__(status.message)
        self.status = status


def invalid(message: str, param: str | None = None, code: int = 400) -> InvalidRequest:
    return InvalidRequest(Status(code, message=message, param=param))


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _words(text: str) -> int:
    return len(text.split())


def _pieces(text: str) -> list[str]:
    """Word pieces ("echo:", " hello", ...) that concatenate back to ``text``."""
    return re.findall(r"\s*\S+|\s+$", text)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _inputs(body: Json, key: str) -> list[str | list[int]]:
    """str | list[str] | list[int] | list[list[int]] → one item per batch element."""
    value = body.get(key)
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(x, int) for x in value):
            return [value]
        if all(
            isinstance(x, str) or (isinstance(x, list) and all(isinstance(t, int) for t in x))
            for x in value
        ):
            return list(value)
    raise invalid(f"Invalid value for '{key}'.", key)


def _item_text(item: str | list[int]) -> str:
    return item if isinstance(item, str) else " ".join(map(str, item))


def _item_tokens(item: str | list[int]) -> int:
    return _words(item) if isinstance(item, str) else len(item)


def _model(body: Json) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("you must provide a model parameter", "model")
    return model


def _n(body: Json) -> int:
    n = body.get("n", 1)
    if n is None:
        return 1
    if not isinstance(n, int) or n < 1:
        raise invalid("Invalid 'n': must be a positive integer.", "n")
    return n


def _include_usage(body: Json) -> bool:
    opts = body.get("stream_options")
    return isinstance(opts, dict) and opts.get("include_usage") is True


def _usage(prompt: int, completion: int) -> Json:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _messages(body: Json) -> list[Json]:
    messages = body.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(m, dict) for m in messages)
    ):
        raise invalid("'messages' must be a non-empty array of message objects.", "messages")
    return messages


def _echo(messages: list[Json]) -> str:
    """``echo: `` and the last user message, or the tool's output when a ``tool`` message
    ends the conversation, so a test sees what a tool round trip brought to the model."""
    if messages[-1].get("role") == "tool":
        return "echo: " + _content_text(messages[-1].get("content"))
    users = [m for m in messages if m.get("role") == "user"]
    return "echo: " + (_content_text(users[-1].get("content")) if users else "")


def chat(body: Json, text: str | None) -> Json | list[str]:
    model, n = _model(body), _n(body)
    messages = _messages(body)
    if text is None:
        text = _echo(messages)
    usage = _usage(sum(_words(_content_text(m.get("content"))) for m in messages), _words(text) * n)
    head: Json = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model}
    prompt_top = _count(body, "prompt_logprobs")
    if prompt_top and body.get("stream"):  # vLLM's rule (protocol.py check_logprobs)
        raise invalid("`prompt_logprobs` are not available when `stream=True`.", "prompt_logprobs")
    if not body.get("stream"):
        message = {"role": "assistant", "content": text, "refusal": None}
        choices = [
            {"index": i, "message": message, "logprobs": None, "finish_reason": "stop"}
            for i in range(n)
        ]
        answer = {
            **head,
            "object": "chat.completion",
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
            "usage": usage,
        }
        if prompt_top is not None:  # vLLM: on chat, one list at the top level
            said = " ".join(_content_text(m.get("content")) for m in messages)
            answer["prompt_logprobs"] = prompt_logprobs(_pieces(said), prompt_top)
        return answer
    head = {**head, "object": "chat.completion.chunk", "system_fingerprint": FINGERPRINT}
    extra: Json = {"usage": None} if _include_usage(body) else {}

    def chunk(i: int, delta: Json, finish: str | None) -> str:
        choice = {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
        return dumps({**head, "choices": [choice], **extra})

    events: list[str] = []
    for i in range(n):
        events.append(chunk(i, {"role": "assistant", "content": ""}, None))
        events.extend(chunk(i, {"content": piece}, None) for piece in _pieces(text))
        events.append(chunk(i, {}, "stop"))
    if extra:
        events.append(dumps({**head, "choices": [], "usage": usage}))
    return [*events, "[DONE]"]


def chat_tool_call(body: Json, call: ToolCall) -> Json | list[str]:
    """A chat answer whose every choice calls ``call.name`` (see :class:`ToolCall`)."""
    model, n, messages = _model(body), _n(body), _messages(body)
    call_id = call.call_id or f"call_{uuid.uuid4().hex[:24]}"
    function = {"name": call.name, "arguments": call.arguments}
    said = _words(call.text or "") + _words(f"{call.name} {call.arguments}")
    usage = _usage(sum(_words(_content_text(m.get("content"))) for m in messages), said * n)
    head: Json = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": model}
    head["system_fingerprint"] = FINGERPRINT
    if not body.get("stream"):
        tool_call = {"id": call_id, "type": "function", "function": function}
        message = {
            "role": "assistant",
            "content": call.text,
            "refusal": None,
            "tool_calls": [tool_call],
        }
        choices = [
            {"index": i, "message": message, "logprobs": None, "finish_reason": "tool_calls"}
            for i in range(n)
        ]
        return {**head, "object": "chat.completion", "choices": choices, "usage": usage}
    head["object"] = "chat.completion.chunk"
    extra: Json = {"usage": None} if _include_usage(body) else {}

    def chunk(i: int, delta: Json, finish: str | None = None) -> str:
        choice = {"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}
        return dumps({**head, "choices": [choice], **extra})

    opening = {
        "index": 0,
        "id": call_id,
        "type": "function",
        "function": {"name": call.name, "arguments": ""},
    }
    fragments = [call.arguments[k : k + 6] for k in range(0, len(call.arguments), 6)]
    events: list[str] = []
    for i in range(n):
        events.append(chunk(i, {"role": "assistant", "content": "" if call.text else None}))
        events.extend(chunk(i, {"content": piece}) for piece in _pieces(call.text or ""))
        events.append(chunk(i, {"tool_calls": [opening]}))
        events.extend(
            chunk(i, {"tool_calls": [{"index": 0, "function": {"arguments": part}}]})
            for part in fragments
        )
        events.append(chunk(i, {}, "tool_calls"))
    if extra:
        events.append(dumps({**head, "choices": [], "usage": usage}))
    return [*events, "[DONE]"]


def _count(body: Json, key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise invalid(f"`{key}` must be a positive value.", key)
    return value


def _item_pieces(item: str | list[int]) -> list[str]:
    return _pieces(item) if isinstance(item, str) else [str(t) for t in item]


def completions(body: Json, text: str | None) -> Json | list[str]:
    model, n = _model(body), _n(body)
    prompts = _inputs(body, "prompt")
    top, prompt_top = _count(body, "logprobs"), _count(body, "prompt_logprobs")
    if prompt_top and body.get("stream"):  # vLLM's rule (protocol.py check_logprobs)
        raise invalid("`prompt_logprobs` are not available when `stream=True`.", "prompt_logprobs")
    answers = [
        text if text is not None else "echo: " + _item_text(p) for p in prompts for _ in range(n)
    ]
    usage = _usage(sum(_item_tokens(p) for p in prompts), sum(_words(a) for a in answers))
    head: Json = {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
    }
    head["model"] = model
    if not body.get("stream"):
        choices = []
        for i, a in enumerate(answers):
            logprobs = None if top is None else completion_logprobs(_pieces(a), top)
            choice = {"text": a, "index": i, "logprobs": logprobs, "finish_reason": "stop"}
            if prompt_top is not None:
                choice["prompt_logprobs"] = prompt_logprobs(
                    _item_pieces(prompts[i // n]), prompt_top
                )
            choices.append(choice)
        return {**head, "choices": choices, "usage": usage}
    extra: Json = {"usage": None} if _include_usage(body) else {}
    events: list[str] = []
    for i, answer in enumerate(answers):
        pieces, offset = _pieces(answer), 0
        for j, (piece, finish) in enumerate([*((p, None) for p in pieces), ("", "stop")]):
            logprobs = None
            if top is not None and piece:
                logprobs = completion_logprobs([piece], top, start=j)
                logprobs["text_offset"] = [offset]
                offset += len(piece)
            choice = {"text": piece, "index": i, "logprobs": logprobs, "finish_reason": finish}
            events.append(dumps({**head, "choices": [choice], **extra}))
    if extra:
        events.append(dumps({**head, "choices": [], "usage": usage}))
    return [*events, "[DONE]"]


def rest_after_prefill(body: Any, text: str | None) -> str | None:
    """What a backend continuing a prefill answers when the whole answer is ``text``: the
    part after the prefill (the final assistant message, or the end of a completions
    prompt that begins ``text``); 400 when the prefill is not a beginning of ``text``."""
    if text is None or not isinstance(body, dict):
        return text
    messages = body.get("messages")
    if isinstance(messages, list):
        if not body.get("continue_final_message"):
            return text
        if body.get("add_generation_prompt", True):  # vLLM's default is true
            raise invalid(
                "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
            )
        last = messages[-1] if messages else {}
        if not isinstance(last, dict) or last.get("role") != "assistant":
            raise invalid("continue_final_message needs a final assistant message.", "messages")
        partial = _content_text(last.get("content"))
        if not text.startswith(partial):
            raise invalid(f"prefill {partial!r} does not begin the answer", "messages")
        return text[len(partial) :]
    prompt = body.get("prompt")
    if not isinstance(prompt, str):
        return text
    begun = max((k for k in range(len(text) + 1) if prompt.endswith(text[:k])), default=0)
    return text[begun:]


def _vector(item: str | list[int], dims: int) -> list[float]:
    """Deterministic unit vector (exactly representable as float32) derived from ``item``."""
    key = dumps(item).encode()
    raw = b"".join(hashlib.sha256(key + bytes([i])).digest() for i in range(math.ceil(dims / 16)))
    vals = [int.from_bytes(raw[2 * k : 2 * k + 2], "little") / 32767.5 - 1.0 for k in range(dims)]
    norm = math.sqrt(sum(v * v for v in vals)) or 1.0
    return list(struct.unpack(f"<{dims}f", struct.pack(f"<{dims}f", *(v / norm for v in vals))))


def embeddings(body: Json, text: str | None) -> Json:
    model, inputs = _model(body), _inputs(body, "input")
    dims = body.get("dimensions") or 8
    if not isinstance(dims, int) or not 0 < dims <= 4096:
        raise invalid("Invalid 'dimensions'.", "dimensions")
    b64 = body.get("encoding_format") == "base64"
    data = []
    for i, item in enumerate(inputs):
        vec = _vector(item, dims)
        emb: Any = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode() if b64 else vec
        data.append({"object": "embedding", "index": i, "embedding": emb})
    tokens = sum(_item_tokens(x) for x in inputs)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


Builder = Callable[[Json, "str | None"], "Json | list[str]"]

#: POST path → builder.
ROUTES: Final[Mapping[str, Builder]] = MappingProxyType(
    {
        "/v1/chat/completions": chat,
        "/v1/completions": completions,
        "/v1/embeddings": embeddings,
        "/v1/responses": responses,  # OpenAI's Responses API, natively (responses_wire.py)
    }
)


def model_object(model: str) -> Json:
    return {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "turnout-fake"}
