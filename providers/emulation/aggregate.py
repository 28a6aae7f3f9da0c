"""Whole responses for a backend that only streams: the chunks, assembled.

Chat: content and refusal concatenated per choice index, tool calls reassembled by their
index (id, type and name arrive once, argument fragments are concatenated), logprob
content lists concatenated. Completions: text and the four logprob arrays concatenated.
The usage comes from the usage chunk, which the upstream call asks for unless told the
backend cannot give one (then `usage` is null).
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from providers.base import Provider
from providers.emulation.wrapper import ProviderWrapper, choice_index, chunk_choices
from providers.types import Endpoint, JSONObject, ProviderRequest, ProviderResponse

_TEXT_LOGPROB_ARRAYS = ("tokens", "token_logprobs", "top_logprobs", "text_offset")


@dataclass
class _ToolCall:
    id: str | None = None
    type: str = "function"
    name: str = ""
    arguments: list[str] = field(default_factory=list)

    def add(self, delta: Mapping[str, Any]) -> None:
        self.id = self.id or delta.get("id")
        self.type = delta.get("type") or self.type
        function = delta.get("function") or {}
        self.name = self.name or function.get("name") or ""
        self.arguments.append(function.get("arguments") or "")

    def whole(self) -> JSONObject:
        return {
            "id": self.id,
            "type": self.type,
            "function": {"name": self.name, "arguments": "".join(self.arguments)},
        }


@dataclass
class _Choice:
    """One choice index's parts, as they arrive."""

    text: list[str] | None = None
    refusal: list[str] | None = None
    tool_calls: dict[int, _ToolCall] = field(default_factory=dict)
    logprobs: dict[str, list[Any] | None] | None = None
    finish_reason: str | None = None

    def add_text(self, piece: Any, *, refusal: bool = False) -> None:
        if not isinstance(piece, str):
            return
        if refusal:
            self.refusal = [*(self.refusal or []), piece]
        else:
            self.text = [*(self.text or []), piece]

    def add_logprobs(self, logprobs: Any) -> None:
        if not isinstance(logprobs, dict):
            return
        merged = self.logprobs if self.logprobs is not None else {}
        for key, values in logprobs.items():
            if isinstance(values, list):
                merged[key] = [*(merged.get(key) or []), *values]
            else:
                merged.setdefault(key, None)  # e.g. chat's `refusal: null`
        self.logprobs = merged


class AggregatedResponse(ProviderWrapper):
    """`complete` streams from the inner provider and returns the assembled response."""

    def __init__(self, inner: Provider, *, usage: bool = True) -> None:
        super().__init__(inner)
        self.usage = usage  # whether the inner stream can carry usage

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        body = {**request.body, "stream": True}
        if self.usage:
            options = request.body.get("stream_options")
            body["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
        chat = request.endpoint is Endpoint.CHAT
        head: JSONObject = {}
        choices: dict[int, _Choice] = {}
        usage: Any = None
        upstream = self.inner.stream(ProviderRequest(request.endpoint, body))
        async with contextlib.aclosing(upstream):
            async for chunk in upstream:
                for key in ("id", "created", "model", "system_fingerprint"):
                    if key not in head and chunk.get(key) is not None:
                        head[key] = chunk[key]
                if chunk.get("usage") is not None:
                    usage = chunk["usage"]
                for piece in chunk_choices(chunk):
                    _add_piece(choices.setdefault(choice_index(piece), _Choice()), piece, chat)
        assembled = [
            _chat_choice(i, c) if chat else _text_choice(i, c) for i, c in sorted(choices.items())
        ]
        return ProviderResponse(
            body={
                "id": head.get("id"),
                "object": "chat.completion" if chat else "text_completion",
                "created": head.get("created"),
                "model": head.get("model"),
                "system_fingerprint": head.get("system_fingerprint"),
                "choices": assembled,
                "usage": usage,
            }
        )


def _add_piece(choice: _Choice, piece: JSONObject, chat: bool) -> None:
    if piece.get("finish_reason"):
        choice.finish_reason = piece["finish_reason"]
    choice.add_logprobs(piece.get("logprobs"))
    if not chat:
        choice.add_text(piece.get("text"))
        return
    delta: dict[str, Any] = piece.get("delta") or {}
    choice.add_text(delta.get("content"))
    choice.add_text(delta.get("refusal"), refusal=True)
    for call in delta.get("tool_calls") or []:
        if isinstance(call, dict):
            choice.tool_calls.setdefault(choice_index(call), _ToolCall()).add(call)


def _chat_choice(index: int, choice: _Choice) -> JSONObject:
    content: str | None = "".join(choice.text or [])
    if not content and choice.tool_calls:
        content = None  # a tool-call answer has no content, not an empty one
    message: JSONObject = {
        "role": "assistant",
        "content": content,
        "refusal": "".join(choice.refusal) if choice.refusal is not None else None,
    }
    if choice.tool_calls:
        message["tool_calls"] = [c.whole() for _, c in sorted(choice.tool_calls.items())]
    return {
        "index": index,
        "message": message,
        "logprobs": choice.logprobs,
        "finish_reason": choice.finish_reason,
    }


def _text_choice(index: int, choice: _Choice) -> JSONObject:
    logprobs = choice.logprobs
    if logprobs is not None:
        logprobs = {key: logprobs.get(key) or [] for key in _TEXT_LOGPROB_ARRAYS}
    return {
        "text": "".join(choice.text or []),
        "index": index,
        "logprobs": logprobs,
        "finish_reason": choice.finish_reason,
    }
