"""`stream_options.include_usage` for a backend whose streams carry no usage: the tokens
counted by Turnout with the deployment's declared tokenizer.

The option is removed upstream; the chunks pass with `usage: null`, and after the last one
comes OpenAI's usage chunk (`choices: []`). Prompt tokens: for chat, the messages rendered
with the model's chat template (what the model reads; plain text if the template refuses
them); for completions, each prompt once, as the tokenizer encodes it. Completion tokens:
each choice's streamed text (content, refusal and tool-call arguments), re-encoded whole —
a count, not the backend's own. A usage chunk the backend sends anyway is preferred.
Tokenizing runs in a worker thread: a long prompt takes seconds to encode.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import Any

from providers.base import Provider
from providers.emulation.wrapper import (
    ProviderWrapper,
    choice_index,
    chunk_choices,
    include_usage,
)
from providers.errors import UpstreamError
from providers.local.tokenizer import TokenizerAdapter
from providers.local.tokenizer_cache import DeclaredTokenizer
from providers.types import Endpoint, JSONObject, ProviderRequest


class StreamUsage(ProviderWrapper):
    """Adds the final usage chunk to streams of a backend that cannot send one."""

    def __init__(self, inner: Provider, tokenizer: DeclaredTokenizer) -> None:
        super().__init__(inner)
        self.tokenizer = tokenizer

    def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        if not include_usage(request.body):
            return self.inner.stream(request)
        return self._counted_stream(request)

    async def _counted_stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        tokenizer = await self.tokenizer.load()
        prompt_tokens = await asyncio.to_thread(count_prompt, tokenizer, request)
        texts: dict[int, list[str]] = {}
        head: JSONObject | None = None
        reported: Any = None
        async with contextlib.aclosing(self.inner.stream(_without_usage(request))) as chunks:
            async for chunk in chunks:
                if head is None:
                    head = {k: chunk.get(k) for k in ("id", "object", "created", "model")}
                if chunk.get("usage") is not None and not chunk_choices(chunk):
                    reported = chunk["usage"]
                    continue
                add_texts(texts, chunk, request.endpoint)
                yield {**chunk, "usage": None}
        if head is None:
            return
        if reported is None:
            reported = await asyncio.to_thread(
                counted_usage, tokenizer, request, texts, prompt_tokens
            )
        yield {**head, "choices": [], "usage": reported}


def add_texts(texts: dict[int, list[str]], chunk: Mapping[str, Any], endpoint: Endpoint) -> None:
    """Collects the generated text a chunk carries, per choice index."""
    for choice in chunk_choices(chunk):
        texts.setdefault(choice_index(choice), []).extend(_texts(choice, endpoint))


async def count_usage(
    tokenizer: TokenizerAdapter, request: ProviderRequest, texts: Mapping[int, list[str]]
) -> JSONObject:
    """The usage of a stream whose text per choice was `texts`, counted off the event loop."""
    return await asyncio.to_thread(counted_usage, tokenizer, request, texts)


def counted_usage(
    tokenizer: TokenizerAdapter,
    request: ProviderRequest,
    texts: Mapping[int, list[str]],
    prompt_tokens: int | None = None,
) -> JSONObject:
    """OpenAI usage counted with `tokenizer` (blocking: call it in a thread)."""
    if prompt_tokens is None:
        prompt_tokens = count_prompt(tokenizer, request)
    completion = sum(
        len(tokenizer.encode_text(_generated(request, i, "".join(parts))))
        for i, parts in texts.items()
    )
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
    }


def count_prompt(tokenizer: TokenizerAdapter, request: ProviderRequest) -> int:
    """The prompt tokens of a chat or completions request (each prompt of a batch once);
    blocking: call it in a thread."""
    body = request.body
    if request.endpoint is Endpoint.CHAT:
        messages = body.get("messages") or []
        try:
            return len(tokenizer.render_chat(messages, body.get("tools"), body.get("tool_choice")))
        except UpstreamError:  # the template refused them: count their text instead
            return sum(len(tokenizer.encode_text(_message_text(m))) for m in messages)
    return sum(
        len(prompt) if isinstance(prompt, list) else len(tokenizer.encode_prompt(prompt))
        for prompt in _prompts(body.get("prompt"))
    )


def _without_usage(request: ProviderRequest) -> ProviderRequest:
    body = dict(request.body)
    options = dict(body.pop("stream_options", None) or {})
    options.pop("include_usage", None)
    if options:
        body["stream_options"] = options
    return ProviderRequest(request.endpoint, body)


def _texts(choice: Mapping[str, Any], endpoint: Endpoint) -> list[str]:
    """The generated text a streamed choice carries."""
    if endpoint is Endpoint.COMPLETIONS:
        return [choice["text"]] if isinstance(choice.get("text"), str) else []
    delta = choice.get("delta")
    if not isinstance(delta, Mapping):
        return []
    pieces = [delta.get("content"), delta.get("refusal")]
    for call in delta.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            pieces += [function.get("name"), function.get("arguments")]
    return [p for p in pieces if isinstance(p, str)]


def _generated(request: ProviderRequest, index: int, text: str) -> str:
    """A choice's text less an echoed prompt (the prompt is counted as prompt tokens)."""
    if request.endpoint is not Endpoint.COMPLETIONS or request.body.get("echo") is not True:
        return text
    n = request.body.get("n")
    prompts = _prompts(request.body.get("prompt"))
    which = index // (n if isinstance(n, int) and n > 0 else 1)
    prompt = prompts[which] if which < len(prompts) else None
    return text.removeprefix(prompt) if isinstance(prompt, str) else text


def _prompts(prompt: Any) -> Sequence[str | list[int]]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) for t in prompt):
        return [prompt]
    return list(prompt) if isinstance(prompt, list) else []


def _message_text(message: Any) -> str:
    content = message.get("content") if isinstance(message, Mapping) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, Mapping))
    return ""
