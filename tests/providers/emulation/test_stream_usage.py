from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from providers.emulation import StreamUsage
from providers.emulation.wrapper import ProviderWrapper
from providers.local.tokenizer_cache import DeclaredTokenizer
from providers.openai.adapter import OpenAIProvider
from providers.types import JSONObject, ProviderRequest
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok
from tests.local_tokenizer import smollm2_tokenizer

from .conftest import chat, completion, posted

USAGE: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}


def tokens(text: str) -> int:
    return len(smollm2_tokenizer().encode(text))


async def collect(wrapper: StreamUsage, request: ProviderRequest) -> list[JSONObject]:
    return [c async for c in wrapper.stream(request)]


async def test_chat_usage_counts_the_rendered_template_and_the_streamed_text(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream, smol: DeclaredTokenizer
) -> None:
    upstream.enqueue(Ok(text="fine thanks"))
    chunks = await collect(StreamUsage(provider, smol), chat("how are you", n=2, **USAGE))
    assert "stream_options" not in posted(upstream)[0]
    assert all(c["usage"] is None and c["choices"] for c in chunks[:-1])
    last = chunks[-1]
    template = smollm2_tokenizer().apply_chat_template(
        [{"role": "user", "content": "how are you"}], tokenize=False, add_generation_prompt=True
    )
    assert isinstance(template, str)
    assert last["choices"] == []
    assert last["id"] == chunks[0]["id"]
    assert last["usage"] == {
        "prompt_tokens": tokens(template),
        "completion_tokens": 2 * tokens("fine thanks"),
        "total_tokens": tokens(template) + 2 * tokens("fine thanks"),
    }


async def test_completions_count_each_prompt_once_and_not_the_echo(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream, smol: DeclaredTokenizer
) -> None:
    upstream.enqueue(Ok(text="ab cd"))
    chunks = await collect(StreamUsage(provider, smol), completion(["x y", "z"], n=2, **USAGE))
    usage = chunks[-1]["usage"]
    assert usage["prompt_tokens"] == tokens("x y") + tokens("z")
    assert usage["completion_tokens"] == 4 * tokens("ab cd")


class _Echoing(ProviderWrapper):
    """A backend whose streamed text starts with the prompt (native echo)."""

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        yield {"id": "c", "object": "text_completion", "choices": [{"index": 0, "text": "hi"}]}
        yield {
            "id": "c",
            "object": "text_completion",
            "choices": [{"index": 0, "text": " there", "finish_reason": "stop"}],
        }


async def test_an_echoed_prompt_is_not_counted_as_generated(
    provider: OpenAIProvider, smol: DeclaredTokenizer
) -> None:
    chunks = await collect(
        StreamUsage(_Echoing(provider), smol), completion("hi", echo=True, **USAGE)
    )
    assert chunks[-1]["usage"]["completion_tokens"] == tokens(" there")


class _Reporting(ProviderWrapper):
    """A backend that sends its own usage chunk even unasked."""

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        yield {"id": "c", "choices": [{"index": 0, "delta": {"content": "x"}}]}
        yield {"id": "c", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}}


async def test_the_backends_own_usage_is_preferred(
    provider: OpenAIProvider, smol: DeclaredTokenizer
) -> None:
    chunks = await collect(StreamUsage(_Reporting(provider), smol), chat(**USAGE))
    assert [c["usage"] for c in chunks] == [None, {"prompt_tokens": 1, "completion_tokens": 2}]


async def test_without_include_usage_the_stream_passes_untouched(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream, smol: DeclaredTokenizer
) -> None:
    extra: dict[str, Any] = {"stream": True, "stream_options": {"include_obfuscation": False}}
    chunks = await collect(StreamUsage(provider, smol), chat(**extra))
    assert posted(upstream)[0]["stream_options"] == {"include_obfuscation": False}
    assert all("usage" not in c for c in chunks)
