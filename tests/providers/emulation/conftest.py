from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from providers.base import Provider
from providers.local.tokenizer import TokenizerAdapter
from providers.local.tokenizer_cache import DeclaredTokenizer, TokenizerCache
from providers.openai.adapter import OpenAIProvider
from providers.openai.settings import OpenAISettings
from providers.timeouts import UpstreamTimeouts
from providers.types import Endpoint, JSONObject, ProviderRequest
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.local_tokenizer import smollm2_tokenizer


@pytest.fixture
async def provider(upstream: FakeOpenAIUpstream) -> AsyncIterator[OpenAIProvider]:
    real = OpenAIProvider(
        "up", OpenAISettings(kind="openai", base_url=upstream.base_url), UpstreamTimeouts()
    )
    await real.start()
    yield real
    await real.aclose()


@pytest.fixture
def smol() -> DeclaredTokenizer:
    """The SmolLM2 tokenizer as a deployment would declare it (loaded once per session)."""
    adapter = TokenizerAdapter(smollm2_tokenizer())
    return TokenizerCache(lambda _: adapter).source("smollm2-135m-instruct")


def chat(content: str = "hello world", **extra: Any) -> ProviderRequest:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}
    return ProviderRequest(Endpoint.CHAT, body)


def completion(prompt: str | list[str] = "hello world", **extra: Any) -> ProviderRequest:
    return ProviderRequest(
        Endpoint.COMPLETIONS, {"model": "gpt-4o-mini", "prompt": prompt, **extra}
    )


def posted(upstream: FakeOpenAIUpstream) -> list[JSONObject]:
    """The JSON bodies the fake received, oldest first."""
    return [r.json for r in upstream.requests if r.method == "POST"]


def chat_texts(chunks: list[JSONObject]) -> dict[int, str]:
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            piece = choice["delta"].get("content") or ""
            texts[choice["index"]] = texts.get(choice["index"], "") + piece
    return texts


def finishes(chunks: list[JSONObject]) -> dict[int, list[str]]:
    seen: dict[int, list[str]] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            if choice.get("finish_reason"):
                seen.setdefault(choice["index"], []).append(choice["finish_reason"])
    return seen


async def answer(provider: Provider, request: ProviderRequest) -> None:
    """Runs the call the request asks for (streamed or whole), discarding the answer."""
    if request.stream:
        async for _ in provider.stream(request):
            pass
    else:
        await provider.complete(request)
