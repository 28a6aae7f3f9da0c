from __future__ import annotations

import asyncio

from openai.types.chat import ChatCompletionChunk

from providers.emulation import StopEmulation
from providers.openai.adapter import OpenAIProvider
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok

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


async def test_stopping_every_choice_closes_the_upstream_stream(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    long = " ".join(f"w{i}" for i in range(60))
    upstream.enqueue(Ok(text=long, chunk_delay=0.02))
    request = chat(stop=[" w3 "], stream=True, stream_options={"include_usage": True})
    chunks = [c async for c in StopEmulation(provider, max_native_stop=0).stream(request)]

    assert chat_texts(chunks) == {0: "w0 w1 w2"}
    assert finishes(chunks) == {0: ["stop"]}
    closes = await asyncio.to_thread(upstream.wait_for_client_closes, 1)
    assert len(closes) == 1
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] >= 4  # what was received, not all 60
    assert chunks[-1]["usage"]["completion_tokens"] < 60
    assert all(c["usage"] is None for c in chunks[:-1])


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
