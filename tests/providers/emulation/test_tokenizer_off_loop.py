"""Tokenizing for an emulation (a chat template rendered, usage counted) runs in a worker
thread: a long prompt takes seconds to encode, and the event loop serves every request."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from providers.emulation import ChatViaCompletions, StopEmulation, StreamUsage
from providers.local.tokenizer import TokenizerAdapter
from providers.local.tokenizer_cache import DeclaredTokenizer, TokenizerCache
from providers.openai.adapter import OpenAIProvider
from providers.types import Endpoint, ProviderRequest
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok
from tests.local_tokenizer import smollm2_tokenizer

from .conftest import answer, chat, completion


class ThreadNoting(TokenizerAdapter):
    """The SmolLM2 tokenizer, noting the thread of every call that tokenizes."""

    def __init__(self) -> None:
        super().__init__(smollm2_tokenizer())
        self.threads: list[int] = []

    def encode_text(self, text: str) -> list[int]:
        self.threads.append(threading.get_ident())
        return super().encode_text(text)

    def chat_text(
        self,
        messages: Sequence[Mapping[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None = None,
        tool_choice: str | Mapping[str, Any] | None = None,
        *,
        continue_final: bool = False,
    ) -> str:
        self.threads.append(threading.get_ident())
        return super().chat_text(messages, tools, tool_choice, continue_final=continue_final)


@pytest.fixture
def noting() -> tuple[ThreadNoting, DeclaredTokenizer]:
    adapter = ThreadNoting()
    return adapter, TokenizerCache(lambda _: adapter).source("smollm2-135m-instruct")


USAGE: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}
LOOP = threading.get_ident  # the test's event loop runs in the calling thread


@pytest.mark.parametrize(
    "request_",
    [chat("how are you", **USAGE), completion(["x y", "z"], **USAGE)],
    ids=["chat", "completions"],
)
async def test_stream_usage_counts_off_the_event_loop(
    provider: OpenAIProvider,
    noting: tuple[ThreadNoting, DeclaredTokenizer],
    request_: ProviderRequest,
) -> None:
    adapter, declared = noting
    chunks = [c async for c in StreamUsage(provider, declared).stream(request_)]
    assert chunks[-1]["usage"]["prompt_tokens"] > 0
    assert adapter.threads
    assert LOOP() not in adapter.threads


async def test_a_cut_stream_is_counted_off_the_event_loop(
    provider: OpenAIProvider,
    upstream: FakeOpenAIUpstream,
    noting: tuple[ThreadNoting, DeclaredTokenizer],
) -> None:
    adapter, declared = noting
    upstream.enqueue(Ok(text="one two three four"))
    stopping = StopEmulation(provider, max_native_stop=0, tokenizer=declared)
    request = chat(stop=[" two"], **USAGE)
    chunks = [c async for c in stopping.stream(request)]
    assert chunks[-1]["usage"]["completion_tokens"] > 0
    assert adapter.threads
    assert LOOP() not in adapter.threads


async def test_the_chat_template_is_rendered_off_the_event_loop(
    provider: OpenAIProvider, noting: tuple[ThreadNoting, DeclaredTokenizer]
) -> None:
    adapter, declared = noting
    request = ProviderRequest(
        Endpoint.CHAT, {"model": "base", "messages": [{"role": "user", "content": "hi"}]}
    )
    await answer(ChatViaCompletions(provider, declared), request)
    assert adapter.threads
    assert LOOP() not in adapter.threads
