"""Anthropic's named stream events → OpenAI `chat.completion.chunk` objects.

One `StreamTranslator` per stream, fed `(event name, data)` pairs in arrival order:

- `message_start` → the role chunk (`{"role": "assistant", "content": ""}`);
- `content_block_start` of a `tool_use` block → a tool-call delta with its index, id and
  name (tool calls are numbered from 0 among themselves, not among all blocks);
- `content_block_delta` → content (`text_delta`) or arguments (`input_json_delta`);
- `message_delta` → remembered stop reason and output usage;
- `message_stop` → the one finish chunk, then the usage chunk if asked for;
- `error` → `UpstreamError`; `ping`, thinking and unknown events → nothing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from providers.anthropic.errors import error_from_event
from providers.anthropic.wire import finish_reason, usage
from providers.types import JSONObject


class StreamTranslator:
    def __init__(self, model: str, *, include_usage: bool, created: int | None = None) -> None:
        self.model = model
        self.include_usage = include_usage
        self.created = int(time.time()) if created is None else created
        self.id = ""
        self.finished = False
        self._tools: dict[int, int] = {}  # Anthropic block index → tool-call index
        self._stop_reason: Any = None
        self._input: Mapping[str, Any] = {}
        self._output_tokens = 0

    def feed(self, event: str, data: Mapping[str, Any]) -> list[JSONObject]:
        """The chunks one event gives (often none); raises `UpstreamError` on `error`."""
        if event == "message":  # an unnamed event: Anthropic's data says what it is
            event = str(data.get("type", ""))
        if event == "message_start":
            return self._start(data.get("message") or {})
        if event == "content_block_start":
            return self._block_start(data)
        if event == "content_block_delta":
            return self._block_delta(data)
        if event == "message_delta":
            self._stop_reason = (data.get("delta") or {}).get("stop_reason")
            delta_usage = data.get("usage") or {}
            self._output_tokens = int(delta_usage.get("output_tokens") or self._output_tokens)
            if delta_usage.get("input_tokens") is not None:
                self._input = delta_usage
            return []
        if event == "message_stop":
            return self._stop()
        if event == "error":
            raise error_from_event(data)
        return []

    def _start(self, message: Mapping[str, Any]) -> list[JSONObject]:
        self.id = str(message.get("id") or "")
        self.model = str(message.get("model") or self.model)
        self._input = message.get("usage") or {}
        self._output_tokens = int(self._input.get("output_tokens") or 0)
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, data: Mapping[str, Any]) -> list[JSONObject]:
        block = data.get("content_block") or {}
        if block.get("type") != "tool_use":
            return []
        index = self._tools[int(data.get("index", 0))] = len(self._tools)
        call = {
            "index": index,
            "id": block.get("id"),
            "type": "function",
            "function": {"name": block.get("name"), "arguments": ""},
        }
        return [self._chunk({"tool_calls": [call]})]

    def _block_delta(self, data: Mapping[str, Any]) -> list[JSONObject]:
        delta = data.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [self._chunk({"content": delta["text"]})]
        if kind == "input_json_delta" and delta.get("partial_json"):
            index = self._tools.get(int(data.get("index", 0)))
            if index is None:
                return []
            call = {"index": index, "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [call]})]
        return []

    def _stop(self) -> list[JSONObject]:
        if self.finished:
            return []
        self.finished = True
        chunks = [self._chunk({}, finish_reason(self._stop_reason))]
        if self.include_usage:
            final = self._envelope([])
            final["usage"] = usage(self._input, self._output_tokens)
            chunks.append(final)
        return chunks

    def _chunk(self, delta: JSONObject, finish: str | None = None) -> JSONObject:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._envelope([choice])

    def _envelope(self, choices: list[JSONObject]) -> JSONObject:
        chunk: JSONObject = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.include_usage:
            chunk["usage"] = None
        return chunk
