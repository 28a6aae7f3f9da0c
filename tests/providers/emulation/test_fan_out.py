from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from providers.base import Provider
from providers.emulation import FanOutN
from providers.emulation.wrapper import ProviderWrapper
from providers.errors import UpstreamError
from providers.openai.adapter import OpenAIProvider
from providers.types import JSONObject, ProviderRequest
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok, Status

from .conftest import chat, chat_texts, completion, finishes, posted

LONG = " ".join(f"w{i}" for i in range(40))


async def test_whole_n_is_n_calls_with_seed_plus_i(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    single = (await provider.complete(chat(seed=7))).body
    body = (await FanOutN(provider).complete(chat(n=3, seed=7))).body

    ChatCompletion.model_validate(body)
    sent = posted(upstream)[1:]
    assert sorted(b["seed"] for b in sent) == [7, 8, 9]
    assert {b["n"] for b in sent} == {1}
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert {c["message"]["content"] for c in body["choices"]} == {"echo: hello world"}
    usage = single["usage"]  # each call read (and was billed for) the prompt
    assert body["usage"] == {
        "prompt_tokens": 3 * usage["prompt_tokens"],
        "completion_tokens": 3 * usage["completion_tokens"],
        "total_tokens": 3 * usage["total_tokens"],
    }


async def test_n_1_passes_through(provider: OpenAIProvider, upstream: FakeOpenAIUpstream) -> None:
    await FanOutN(provider).complete(chat(n=1, seed=3))
    assert posted(upstream) == [chat(n=1, seed=3).body]


async def test_streamed_n_interleaves_and_finishes_each_index_once(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Ok(text="one two three four", chunk_delay=0.01))
    request = chat(n=3, stream=True, stream_options={"include_usage": True})
    chunks = [c async for c in FanOutN(provider).stream(request)]

    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    assert len(posted(upstream)) == 3
    assert chat_texts(chunks) == {i: "one two three four" for i in range(3)}
    assert finishes(chunks) == {i: ["stop"] for i in range(3)}
    roles = [
        c["choices"][0]["index"]
        for c in chunks
        if c["choices"]
        if "role" in c["choices"][0]["delta"]
    ]
    assert sorted(roles) == [0, 1, 2]
    order = [c["choices"][0]["index"] for c in chunks if c["choices"]]
    assert order != sorted(order), "streams should interleave as they arrive"
    assert [c for c in chunks if not c["choices"]] == [chunks[-1]]
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["usage"] == {"prompt_tokens": 6, "completion_tokens": 12, "total_tokens": 18}
    assert {(c["id"], c["created"]) for c in chunks} == {(chunks[0]["id"], chunks[0]["created"])}


async def test_completions_batch_indices_are_prompt_major(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    body = (await FanOutN(provider).complete(completion(["a", "b"], n=2))).body
    Completion.model_validate(body)
    assert [(c["index"], c["text"]) for c in body["choices"]] == [
        (0, "echo: a"),
        (1, "echo: a"),
        (2, "echo: b"),
        (3, "echo: b"),
    ]
    assert body["usage"]["prompt_tokens"] == 4  # both calls read both prompts
    assert body["usage"]["completion_tokens"] == 8


async def test_completions_batch_streamed(provider: OpenAIProvider) -> None:
    request = completion(["a", "b"], n=2, stream=True)
    texts: dict[int, str] = {}
    ends: dict[int, int] = {}
    async for chunk in FanOutN(provider).stream(request):
        assert chunk["object"] == "text_completion"  # Completion's model rejects a null finish
        for choice in chunk["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
            ends[choice["index"]] = ends.get(choice["index"], 0) + bool(choice["finish_reason"])
    assert texts == {0: "echo: a", 1: "echo: a", 2: "echo: b", 3: "echo: b"}
    assert ends == {0: 1, 1: 1, 2: 1, 3: 1}


async def test_a_failed_call_cancels_the_others(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Ok(text=LONG, chunk_delay=0.05))
    upstream.enqueue(Status(500))
    with pytest.raises(UpstreamError) as caught:
        async for _ in FanOutN(provider).stream(chat(n=3, stream=True)):
            pass
    assert caught.value.status == 500
    closes = await asyncio.to_thread(upstream.wait_for_client_closes, 2)
    assert len(closes) == 2


async def test_a_failed_whole_call_raises(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Ok(delay=0.5))
    upstream.enqueue(Status(503))
    with pytest.raises(UpstreamError):
        await FanOutN(provider).complete(chat(n=3))
    await asyncio.to_thread(upstream.wait_for_client_closes, 2)


async def test_consumer_closing_closes_every_inner_stream(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Ok(text=LONG, chunk_delay=0.05))
    async with contextlib.aclosing(FanOutN(provider).stream(chat(n=3, stream=True))) as chunks:
        async for _ in chunks:
            break
    closes = await asyncio.to_thread(upstream.wait_for_client_closes, 3)
    assert len(closes) == 3


class _SomeCount(ProviderWrapper):
    """A backend whose streams report no usage for `quiet` seeds (as a call cut short at an
    emulated stop string, with no tokenizer to count it, reports none)."""

    def __init__(self, inner: Provider, quiet: set[int]) -> None:
        super().__init__(inner)
        self.quiet = quiet

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        choice = {"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}
        yield {"id": "c", "choices": [choice], "usage": None}
        if request.body["seed"] not in self.quiet:
            usage = {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}
            yield {"id": "c", "choices": [], "usage": usage}


@pytest.mark.parametrize(("quiet", "total"), [({1}, None), (set(), 6)])
async def test_a_usage_some_calls_lack_is_left_out_not_summed_in_part(
    provider: OpenAIProvider, quiet: set[int], total: int | None
) -> None:
    request = chat(n=2, seed=0, stream=True, stream_options={"include_usage": True})
    chunks = [c async for c in FanOutN(_SomeCount(provider, quiet)).stream(request)]
    usages = [c["usage"]["total_tokens"] for c in chunks if c["usage"] is not None]
    assert usages == ([] if total is None else [total])  # every call's prompt and completion
