from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

from openai.types.chat import ChatCompletionChunk

from providers.emulation import StopEmulation
from providers.emulation.wrapper import ProviderWrapper
from providers.local.tokenizer_cache import DeclaredTokenizer
from providers.openai.adapter import OpenAIProvider
from providers.types import JSONObject, ProviderRequest
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok
from tests.local_tokenizer import smollm2_tokenizer

from .conftest import chat, chat_texts, completion, finishes, posted

TEXT = "alpha beta gamma delta epsilon"  # the fake streams "alpha", " beta", " gamma", ...
SPANNING = "ta gam"  # ends " beta", begins " gamma"


async def test_whole_and_streamed_cut_at_a_stop_spanning_chunks(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Ok(text=TEXT))
    stopping = StopEmulation(provider, max_native_stop=0)
    stop = ["zzz", SPANNING]
    whole = (await stopping.complete(chat(n=2, stop=stop))).body
    chunks = [c async for c in stopping.stream(chat(n=2, stop=stop, stream=True))]

    assert all("stop" not in body for body in posted(upstream))
    assert [(c["message"]["content"], c["finish_reason"]) for c in whole["choices"]] == [
        ("alpha be", "stop"),
        ("alpha be", "stop"),
    ]
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    assert chat_texts(chunks) == {0: "alpha be", 1: "alpha be"}
    assert finishes(chunks) == {0: ["stop"], 1: ["stop"]}


async def test_text_held_back_for_a_possible_stop_is_released_at_the_end(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Ok(text="one two ze"))
    stopping = StopEmulation(provider, max_native_stop=0)
    whole = (await stopping.complete(chat(stop="zeta"))).body
    request = chat(stop="zeta", stream=True, stream_options={"include_usage": True})
    chunks = [c async for c in stopping.stream(request)]
    usage = chunks.pop()
    assert usage["usage"] == whole["usage"]  # read to the end: the backend's own count
    assert upstream.client_closes == []

    assert whole["choices"][0]["message"]["content"] == "one two ze"
    last = chunks[-1]["choices"][0]
    assert (last["delta"], last["finish_reason"]) == ({"content": "ze"}, "stop")  # held back
    assert chat_texts(chunks) == {0: "one two ze"}
    assert finishes(chunks) == {0: ["stop"]}


LONG = " ".join(f"w{i}" for i in range(60))  # streamed "w0", " w1", " w2", ...
CUT = chat(stop=[" w3 "], stream=True, stream_options={"include_usage": True})


async def test_stopping_every_choice_closes_the_upstream_stream(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(Ok(text=LONG, chunk_delay=0.02))
    chunks = [c async for c in StopEmulation(provider, max_native_stop=0).stream(CUT)]

    assert chat_texts(chunks) == {0: "w0 w1 w2"}
    assert finishes(chunks) == {0: ["stop"]}
    closes = await asyncio.to_thread(upstream.wait_for_client_closes, 1)
    assert len(closes) == 1
    # The backend's usage chunk never came, and no tokenizer was declared to count with:
    # no usage chunk rather than a made-up one.
    assert all(c["choices"] for c in chunks)
    assert all(c["usage"] is None for c in chunks)


async def test_a_cut_stream_is_counted_with_the_declared_tokenizer(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream, smol: DeclaredTokenizer
) -> None:
    upstream.enqueue(Ok(text=LONG, chunk_delay=0.02))
    stopping = StopEmulation(provider, max_native_stop=0, tokenizer=smol)
    chunks = [c async for c in stopping.stream(CUT)]

    assert chat_texts(chunks) == {0: "w0 w1 w2"}
    last = chunks[-1]
    assert last["choices"] == []
    template = smollm2_tokenizer().apply_chat_template(
        [{"role": "user", "content": "hello world"}], tokenize=False, add_generation_prompt=True
    )
    assert isinstance(template, str)
    prompt = len(smollm2_tokenizer().encode(template))
    received = len(smollm2_tokenizer().encode("w0 w1 w2 w3 w4"))  # all that was read
    assert last["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": received,
        "total_tokens": prompt + received,
    }


class _CountingAsItGoes(ProviderWrapper):
    """A backend that puts its usage so far on every chunk (vLLM's continuous stats)."""

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        for i, piece in enumerate(["a", " stop", " b"]):  # two tokens a piece
            usage = {"prompt_tokens": 3, "completion_tokens": 2 * i + 2, "total_tokens": 2 * i + 5}
            choice = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
            yield {"id": "c", "choices": [choice], "usage": usage}


async def test_a_cut_stream_keeps_the_usage_the_backend_reported_so_far(
    provider: OpenAIProvider,
) -> None:
    request = chat(stop=[" stop"], stream=True, stream_options={"include_usage": True})
    stopping = StopEmulation(_CountingAsItGoes(provider), max_native_stop=0)
    chunks = [c async for c in stopping.stream(request)]
    assert chat_texts(chunks) == {0: "a"}
    assert chunks[-1]["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


async def test_whitespace_only_stops_are_matched_where_the_backend_refuses_them(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Ok(text="alpha beta"))
    blank = StopEmulation(provider, max_native_stop=4, whitespace_stop=False)
    whole = (await blank.complete(chat(stop=["zz", " "]))).body
    assert whole["choices"][0]["message"]["content"] == "alpha"
    assert "stop" not in posted(upstream)[-1]
    await blank.complete(chat(stop=["zz", "beta"]))
    assert posted(upstream)[-1]["stop"] == ["zz", "beta"]  # none blank: sent natively


async def test_completions_batch_stops_each_choice(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Ok(text=TEXT))
    stopping = StopEmulation(provider, max_native_stop=1)
    request = completion(["a", "b"], stop=["delta", SPANNING])
    whole = (await stopping.complete(request)).body
    texts: dict[int, str] = {}
    ends: dict[int, list[str]] = {}
    async for chunk in stopping.stream(
        completion(["a", "b"], stop=["delta", SPANNING], stream=True)
    ):
        for choice in chunk["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
            if choice["finish_reason"]:
                ends.setdefault(choice["index"], []).append(choice["finish_reason"])

    assert [c["text"] for c in whole["choices"]] == ["alpha be", "alpha be"]
    assert texts == {0: "alpha be", 1: "alpha be"}
    assert ends == {0: ["stop"], 1: ["stop"]}


async def test_stops_within_the_native_limit_go_upstream(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    await StopEmulation(provider, max_native_stop=2).complete(chat(stop=["x", "y"]))
    assert posted(upstream)[-1]["stop"] == ["x", "y"]
