"""`/v1/chat/completions` for a completion-only backend: the messages rendered with the
model's chat template (from the deployment's declared tokenizer) and sent as one prompt.

The rendered text ends with the assistant's generation prompt; a BOS the tokenizer adds by
itself is left for the backend to add. Fields chat shares with completions (`n`, `stop`,
sampling, `seed`, `logit_bias`, `stream_options`, unknown fields) are carried;
`max_completion_tokens` becomes `max_tokens`, and with neither set `max_tokens: null` asks
for chat's default (until the model stops) instead of completions' 16; `logprobs` +
`top_logprobs: k` become `logprobs: k`. What a prompt cannot express (tools, functions,
structured output) never gets here: the planner refuses it, or drops it in drop mode.
The answer comes back as a `chat.completion` (or its chunks: a role chunk per index first,
content deltas, exactly one finish_reason per index, the usage chunk when asked).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping
from typing import Any

from providers.base import Provider
from providers.emulation.text_logprobs import chat_logprobs
from providers.emulation.wrapper import (
    ProviderWrapper,
    choice_index,
    chunk_choices,
    include_usage,
)
from providers.local.tokenizer_cache import DeclaredTokenizer
from providers.types import Endpoint, JSONObject, ProviderRequest, ProviderResponse

# Chat fields a completions request has no place for (tools and structured output are
# refused before a call is made; the rest mean nothing to a completions backend).
_CHAT_ONLY = frozenset(
    {
        "messages",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "functions",
        "function_call",
        "response_format",
        "logprobs",
        "top_logprobs",
        "max_completion_tokens",
        "modalities",
        "audio",
        "prediction",
        "store",
        "metadata",
        "reasoning_effort",
        "web_search_options",
    }
)


class ChatViaCompletions(ProviderWrapper):
    """Serves chat with one completions call per request; other endpoints pass."""

    def __init__(self, inner: Provider, tokenizer: DeclaredTokenizer) -> None:
        super().__init__(inner)
        self.tokenizer = tokenizer

    @property
    def endpoints(self) -> frozenset[Endpoint]:
        served = self.inner.endpoints
        return served | {Endpoint.CHAT} if Endpoint.COMPLETIONS in served else served

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        if request.endpoint is not Endpoint.CHAT:
            return await self.inner.complete(request)
        response = await self.inner.complete(await self._completion(request))
        top = _top_logprobs(request.body)
        body = response.body
        choices = [_chat_choice(choice, top) for choice in chunk_choices(body)]
        answer = {**chat_head(body, "chat.completion"), "choices": choices}
        answer["usage"] = body.get("usage")
        return ProviderResponse(body=answer, headers=response.headers)

    def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        if request.endpoint is not Endpoint.CHAT:
            return self.inner.stream(request)
        return self._chat_stream(request)

    async def _chat_stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        upstream = await self._completion(request)  # a template error is a 400 before any chunk
        rewriter = _ChunkRewriter(_top_logprobs(request.body), include_usage(request.body))
        async with contextlib.aclosing(self.inner.stream(upstream)) as chunks:
            async for chunk in chunks:
                for out in rewriter.rewrite(chunk):
                    yield out

    async def _completion(self, request: ProviderRequest) -> ProviderRequest:
        tokenizer = await self.tokenizer.load()
        body = request.body
        # Off the event loop: a long conversation takes a while to render.
        prompt = await asyncio.to_thread(tokenizer.chat_text, body.get("messages") or [])
        bos = tokenizer.tokenizer.bos_token
        if tokenizer.bos_prefix and isinstance(bos, str) and bos:
            prompt = prompt.removeprefix(bos)  # the backend adds its own
        sent: JSONObject = {k: v for k, v in body.items() if k not in _CHAT_ONLY}
        sent["prompt"] = prompt
        limit = body.get("max_completion_tokens")
        sent["max_tokens"] = limit if limit is not None else body.get("max_tokens")
        top = _top_logprobs(body)
        if top is not None:
            sent["logprobs"] = top
        return ProviderRequest(Endpoint.COMPLETIONS, sent)


class _ChunkRewriter:
    """`text_completion` chunks → `chat.completion.chunk`s."""

    def __init__(self, top: int | None, with_usage: bool) -> None:
        self.top = top
        self.with_usage = with_usage
        self.head: JSONObject | None = None
        self.started: set[int] = set()
        self.finished: set[int] = set()

    def rewrite(self, chunk: JSONObject) -> list[JSONObject]:
        if self.head is None:
            self.head = chat_head(chunk, "chat.completion.chunk")
        head = self.head
        if chunk.get("usage") is not None and not chunk_choices(chunk):
            return [{**head, "choices": [], "usage": chunk["usage"]}]
        if self.with_usage:
            head = {**head, "usage": None}
        out: list[JSONObject] = []
        for choice in chunk_choices(chunk):
            index = choice_index(choice)
            if index not in self.started:
                self.started.add(index)
                role = _delta_choice(index, {"role": "assistant", "content": ""})
                out.append({**head, "choices": [role]})
            piece = self._choice(index, choice)
            if piece is not None:
                out.append({**head, "choices": [piece]})
        return out

    def _choice(self, index: int, choice: Mapping[str, Any]) -> JSONObject | None:
        text = choice.get("text")
        finish = choice.get("finish_reason") or None
        if finish and index in self.finished:
            finish = None  # exactly one finish_reason per index
        logprobs = chat_logprobs(choice.get("logprobs"), self.top) if self.top is not None else None
        if not text and not finish and logprobs is None:
            return None
        if finish:
            self.finished.add(index)
        piece = _delta_choice(index, {"content": text} if text else {}, finish)
        piece["logprobs"] = logprobs
        return piece


def chat_head(body: Mapping[str, Any], kind: str) -> JSONObject:
    """The top-level fields of a chat answer, from a completions answer."""
    upstream_id = body.get("id")
    head: JSONObject = {
        "id": "chatcmpl-" + upstream_id.removeprefix("cmpl-")
        if isinstance(upstream_id, str)
        else upstream_id,
        "object": kind,
        "created": body.get("created"),
        "model": body.get("model"),
    }
    if "system_fingerprint" in body:
        head["system_fingerprint"] = body["system_fingerprint"]
    return head


def _chat_choice(choice: Mapping[str, Any], top: int | None) -> JSONObject:
    text = choice.get("text")
    return {
        "index": choice_index(choice),
        "message": {
            "role": "assistant",
            "content": text if isinstance(text, str) else "",
            "refusal": None,
        },
        "logprobs": chat_logprobs(choice.get("logprobs"), top) if top is not None else None,
        "finish_reason": choice.get("finish_reason"),
    }


def _delta_choice(index: int, delta: JSONObject, finish: str | None = None) -> JSONObject:
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


def _top_logprobs(body: Mapping[str, Any]) -> int | None:
    """How many alternatives per token the caller asked for; None: no logprobs."""
    if body.get("logprobs") is not True:
        return None
    top = body.get("top_logprobs")
    return top if isinstance(top, int) and not isinstance(top, bool) else 0
