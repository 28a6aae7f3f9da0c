"""Streaming for a backend that cannot stream: one whole response, replayed as chunks.

The chunks follow OpenAI's stream contract: for chat, per choice a role chunk, one chunk
with all the content (and the tool calls, whole), then a chunk with the finish reason; for
completions, one chunk per choice carrying its text and finish reason. Logprobs ride on
the content chunk. With `stream_options.include_usage` every chunk has `usage: null` and a
last chunk with `choices: []` carries the usage.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from typing import Any

from providers.emulation.wrapper import ProviderWrapper, chunk_choices, include_usage
from providers.types import Endpoint, JSONObject, ProviderRequest

_STREAM_KEYS = ("stream", "stream_options")


class SyntheticStream(ProviderWrapper):
    """`stream` asks the inner provider for a whole response and yields it as chunks."""

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        body = {k: v for k, v in request.body.items() if k not in _STREAM_KEYS}
        response = await self.inner.complete(ProviderRequest(request.endpoint, body))
        for chunk in synthesize_chunks(
            request.endpoint, response.body, include_usage(request.body)
        ):
            yield chunk


def synthesize_chunks(
    endpoint: Endpoint, body: JSONObject, with_usage: bool
) -> Iterator[JSONObject]:
    """The chunks a streaming backend would have sent for the whole response `body`."""
    chat = endpoint is Endpoint.CHAT
    head: JSONObject = {
        "id": body.get("id"),
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": body.get("created"),
        "model": body.get("model"),
    }
    if "system_fingerprint" in body:
        head["system_fingerprint"] = body["system_fingerprint"]
    if with_usage:
        head["usage"] = None
    for choice in chunk_choices(body):
        pieces = _chat_choice_chunks(choice) if chat else [_text_choice_chunk(choice)]
        for piece in pieces:
            yield {**head, "choices": [piece]}
    if with_usage:
        yield {**head, "choices": [], "usage": body.get("usage")}


def _chat_choice_chunks(choice: JSONObject) -> list[JSONObject]:
    index = choice.get("index", 0)
    message: dict[str, Any] = choice.get("message") or {}
    role = message.get("role") or "assistant"
    chunks: list[JSONObject] = [
        {
            "index": index,
            "delta": {"role": role, "content": ""},
            "logprobs": None,
            "finish_reason": None,
        }
    ]
    delta: JSONObject = {}
    if message.get("content"):
        delta["content"] = message["content"]
    if message.get("refusal"):
        delta["refusal"] = message["refusal"]
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list) and tool_calls:
        delta["tool_calls"] = [
            {"index": i, **call} for i, call in enumerate(tool_calls) if isinstance(call, dict)
        ]
    if message.get("function_call"):
        delta["function_call"] = message["function_call"]
    logprobs = choice.get("logprobs")
    if delta or logprobs is not None:
        chunks.append({"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": None})
    chunks.append(
        {
            "index": index,
            "delta": {},
            "logprobs": None,
            "finish_reason": choice.get("finish_reason") or "stop",
        }
    )
    return chunks


def _text_choice_chunk(choice: JSONObject) -> JSONObject:
    return {
        "text": choice.get("text") or "",
        "index": choice.get("index", 0),
        "logprobs": choice.get("logprobs"),
        "finish_reason": choice.get("finish_reason") or "stop",
    }
