"""Span attributes in the OpenTelemetry GenAI semantic conventions, from the bodies
Turnout sees: pure functions of JSON, no I/O. The names are the conventions'
(`gen_ai.*`, `error.type`); Turnout's own are under `turnout.*`."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from providers.types import Endpoint

Attributes = dict[str, Any]

# `gen_ai.operation.name` by the endpoint called: the Responses and Messages APIs are chats.
OPERATIONS: Mapping[Endpoint, str] = {
    Endpoint.CHAT: "chat",
    Endpoint.COMPLETIONS: "text_completion",
    Endpoint.EMBEDDINGS: "embeddings",
    Endpoint.RESPONSES: "chat",
    Endpoint.MESSAGES: "chat",
}
# The conventions' well-known `gen_ai.provider.name` values for Turnout's kinds; any other
# kind (a local sampler) is named by its kind.
PROVIDER_NAMES: Mapping[str, str] = {"openai": "openai", "anthropic": "anthropic"}
# A client's own strings put on a span (its model name) are cut to this: a body may be
# megabytes, and every sampled span waits in the export queue until it is sent.
MAX_NAME_CHARS = 256
TRUNCATED = "…[truncated]"  # ends captured content that was cut at its bound


class Budget:
    """What is left of a captured attribute's characters (`capture_content`): texts
    taken past it are cut, so a huge prompt or answer costs at most `limit` characters
    on its span (and in the export queue) while the attribute stays valid JSON."""

    __slots__ = ("left",)

    def __init__(self, limit: int) -> None:
        self.left = limit

    def take(self, text: str) -> str:
        if len(text) <= self.left:
            self.left -= len(text)
            return text
        kept, self.left = text[: self.left], 0
        return kept + TRUNCATED

    def spent(self) -> bool:
        """One more message or part, charged its JSON's framing: True when nothing is
        left, so a body of a million tiny parts is cut short too."""
        self.left = max(self.left - _FRAMING, 0)
        return self.left == 0


_FRAMING = 16  # about what a message's or part's JSON costs beyond its text


def span_name(operation: str, model: str | None) -> str:
    """`{gen_ai.operation.name} {gen_ai.request.model}`, as the conventions name spans."""
    return f"{operation} {model}" if model else operation


def request_facts(body: Mapping[str, Any]) -> tuple[str | None, int | None, float | None]:
    """What `request_attributes` reads of a request body (its model, token cap and
    temperature), taken on the request path: the body itself is not kept for the export
    thread (it may be megabytes)."""
    model = body.get("model")
    cap = body.get("max_completion_tokens", body.get("max_tokens", body.get("max_output_tokens")))
    temperature = body.get("temperature")
    return (
        model[:MAX_NAME_CHARS] if type(model) is str else None,
        cap if type(cap) is int else None,  # never a bool
        temperature if type(temperature) is float or type(temperature) is int else None,
    )


def request_attributes(
    operation: str, model: str | None, cap: int | None, temperature: float | None
) -> Attributes:
    """What a request asked for (`request_facts`): its operation, model, token cap and
    temperature."""
    attributes: Attributes = {"gen_ai.operation.name": operation}
    if model is not None:
        attributes["gen_ai.request.model"] = model
    if cap is not None:
        attributes["gen_ai.request.max_tokens"] = cap
    if temperature is not None:
        attributes["gen_ai.request.temperature"] = float(temperature)
    return attributes


def usage_attributes(usage: Any) -> Attributes:
    """Token counts from an OpenAI (`prompt_tokens`) or Anthropic/Responses
    (`input_tokens`) usage object."""
    if not isinstance(usage, Mapping):
        return {}
    attributes: Attributes = {}
    for name, keys in (
        ("gen_ai.usage.input_tokens", ("prompt_tokens", "input_tokens")),
        ("gen_ai.usage.output_tokens", ("completion_tokens", "output_tokens")),
    ):
        for key in keys:
            value = usage.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                attributes[name] = value
                break
    return attributes


def kept_usage(usage: Any) -> Any:
    """A usage object as it is now, to be read on the export thread (a copy: whoever
    answers the client may still change the answer's own)."""
    return usage.copy() if type(usage) is dict else usage


Answer = tuple[Any, Any, list[str]]  # an answer's model, id and finish reasons


def answer_facts(body: Mapping[str, Any]) -> Answer:
    """What a whole answer says of itself (its model, id and finish reasons), taken on the
    request path: the body is not kept (it may be megabytes)."""
    return body.get("model"), body.get("id"), finish_reasons(body)


def answer_attributes(model: Any, answer_id: Any, reasons: list[str]) -> Attributes:
    attributes: Attributes = {}
    if isinstance(model, str):
        attributes["gen_ai.response.model"] = model
    if isinstance(answer_id, str):
        attributes["gen_ai.response.id"] = answer_id
    if reasons:
        attributes["gen_ai.response.finish_reasons"] = reasons
    return attributes


def response_attributes(usage: Any, answer: Answer) -> Attributes:
    """A whole answer's attributes (`kept_usage`, `answer_facts`): usage, model, id,
    finish reasons."""
    attributes = usage_attributes(usage)
    attributes.update(answer_attributes(*answer))
    return attributes


def finish_reasons(body: Mapping[str, Any]) -> list[str]:
    """OpenAI's per-choice `finish_reason`s, Anthropic's `stop_reason`, or a Response's
    `status`."""
    choices = body.get("choices")
    if type(choices) is list:  # parsed JSON: plain dicts and lists
        reasons = [c.get("finish_reason") if type(c) is dict else None for c in choices]
        return [r for r in reasons if type(r) is str]
    for key in ("stop_reason", "status"):
        value = body.get(key)
        if isinstance(value, str):
            return [value]
    return []


def input_messages(body: Mapping[str, Any], limit: int) -> str | None:
    """`gen_ai.input.messages` (the conventions' JSON of role and parts) from a chat's
    `messages`, a completion's `prompt` or an embedding's `input`; None when it has none.
    Its texts together hold at most `limit` characters (the rest cut, marked)."""
    budget = Budget(limit)
    messages = body.get("messages")
    if isinstance(messages, list):
        shaped: list[dict[str, Any]] = []
        for m in messages:
            if not isinstance(m, Mapping):
                continue
            if budget.spent():
                shaped.append({"role": "user", "parts": [_CUT]})
                break
            shaped.append({"role": _role(m.get("role")), "parts": _parts(m.get("content"), budget)})
        return _json(shaped)
    for key in ("prompt", "input"):
        value = body.get(key)
        if value is not None:
            return _json([{"role": "user", "parts": _parts(value, budget)}])
    return None


def output_messages(texts: Mapping[int, str], reasons: Mapping[int, str], limit: int) -> str:
    """`gen_ai.output.messages`: each choice's text, by index, with its finish reason;
    the texts together hold at most `limit` characters (the rest cut, marked)."""
    budget = Budget(limit)
    return _json(
        [
            {
                "role": "assistant",
                "parts": [{"type": "text", "content": budget.take(texts[i])}],
                "finish_reason": reasons.get(i, ""),
            }
            for i in sorted(texts)
        ]
    )


def answer_texts(body: Mapping[str, Any]) -> dict[int, str]:
    """Each choice's text in a whole chat or completions answer (Anthropic's content
    blocks as choice 0)."""
    texts: dict[int, str] = {}
    choices = body.get("choices")
    if isinstance(choices, list):
        for i, choice in enumerate(choices):
            if not isinstance(choice, Mapping):
                continue
            message = choice.get("message")
            text = message.get("content") if isinstance(message, Mapping) else choice.get("text")
            if isinstance(text, str):
                texts[choice.get("index", i)] = text
    elif isinstance(body.get("content"), list):
        texts[0] = "".join(b.get("text", "") for b in body["content"] if isinstance(b, Mapping))
    return texts


def translation_list(
    emulated: Iterable[str], dropped: Iterable[str], clamped: Iterable[str]
) -> list[str]:
    """`turnout.translation`: what was done to fit the deployment, as `emulated:n`,
    `dropped:logprobs`, `clamped:max_tokens`."""
    return (
        [f"emulated:{e}" for e in emulated]
        + [f"dropped:{d}" for d in dropped]
        + [f"clamped:{c}" for c in clamped]
    )


_CUT = {"type": "text", "content": TRUNCATED}  # where messages or parts were left out


def _role(role: Any) -> Any:
    return role[:MAX_NAME_CHARS] if isinstance(role, str) else role


def _parts(content: Any, budget: Budget) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "content": budget.take(content)}]
    if isinstance(content, list):
        parts: list[dict[str, Any]] = []
        for item in content:
            if budget.spent():
                parts.append(_CUT)
                break
            if isinstance(item, Mapping) and isinstance(item.get("text"), str):
                parts.append({"type": "text", "content": budget.take(item["text"])})
            elif isinstance(item, str):
                parts.append({"type": "text", "content": budget.take(item)})
            else:  # images, audio, token ids: their kind only
                kind = item.get("type") if isinstance(item, Mapping) else type(item).__name__
                parts.append({"type": str(kind)[:MAX_NAME_CHARS]})
        return parts
    return [] if content is None else [{"type": type(content).__name__}]


def _json(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()
