from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest
from openai.types import Completion

from providers.base import Provider
from providers.emulation import CompletionsViaChat
from providers.emulation.completions_via_chat import FILL_INSTRUCTION
from providers.errors import UpstreamError
from providers.openai.adapter import OpenAIProvider
from providers.types import Endpoint, JSONObject, ProviderRequest, ProviderResponse
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok

from .conftest import answer, chat, completion, posted

RECORDED = Path(__file__).parent / "recorded" / "chat_logprobs.json"


def streamed(chunks: list[JSONObject]) -> tuple[dict[int, str], dict[int, list[str]]]:
    texts: dict[int, str] = {}
    ends: dict[int, list[str]] = {}
    for chunk in chunks:
        assert chunk["object"] == "text_completion"
        for choice in chunk["choices"]:
            texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
            if choice["finish_reason"]:
                ends.setdefault(choice["index"], []).append(choice["finish_reason"])
    return texts, ends


async def test_each_prompt_is_its_own_chat(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    body = (
        await CompletionsViaChat(provider).complete(
            completion(["alpha", "beta"], temperature=0.5, seed=3, max_tokens=7, echo=False)
        )
    ).body

    Completion.model_validate(body)
    chats = [r for r in upstream.requests if r.path == "/v1/chat/completions"]
    assert len(chats) == 2
    assert len(upstream.requests) == 2
    users = sorted(r.json["messages"][0]["content"] for r in chats)
    assert users == ["alpha", "beta"]
    for r in chats:
        assert r.json["messages"] == [{"role": "user", "content": r.json["messages"][0]["content"]}]
        assert r.json["temperature"] == 0.5
        assert r.json["seed"] == 3
        assert r.json["max_tokens"] == 7
        assert not {"prompt", "echo", "suffix", "best_of", "logprobs"} & set(r.json)
    for r in chats:
        mine = r.json["messages"][0]["content"]
        other = "beta" if mine == "alpha" else "alpha"
        assert other not in json.dumps(r.json)
    assert [(c["index"], c["text"]) for c in body["choices"]] == [
        (0, "echo: alpha"),
        (1, "echo: beta"),
    ]


async def test_n_indices_are_prompt_major_and_usage_is_summed(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    body = (await CompletionsViaChat(provider).complete(completion(["a b", "c"], n=2))).body

    Completion.model_validate(body)
    assert body["object"] == "text_completion"
    assert [(c["index"], c["text"], c["finish_reason"]) for c in body["choices"]] == [
        (0, "echo: a b", "stop"),
        (1, "echo: a b", "stop"),
        (2, "echo: c", "stop"),
        (3, "echo: c", "stop"),
    ]
    assert {b["n"] for b in posted(upstream)} == {2}
    # fake usage: prompt = words of the prompt, completion = words of the answer x n
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 10, "total_tokens": 13}


async def test_max_tokens_defaults_to_completions_16(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    await CompletionsViaChat(provider).complete(completion("x"))
    assert posted(upstream)[0]["max_tokens"] == 16


async def test_streamed_batch_interleaves_and_finishes_each_index_once(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Ok(chunk_delay=0.01))
    request = completion(
        ["one two three", "four five six"],
        n=2,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [c async for c in CompletionsViaChat(provider).stream(request)]

    texts, ends = streamed(chunks)
    assert texts == {
        0: "echo: one two three",
        1: "echo: one two three",
        2: "echo: four five six",
        3: "echo: four five six",
    }
    assert ends == {i: ["stop"] for i in range(4)}
    assert all(c["choices"] for c in chunks[:-1]), "role and per-prompt usage chunks swallowed"
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 6, "completion_tokens": 16, "total_tokens": 22}
    order = [c["choices"][0]["index"] for c in chunks[:-1]]
    assert order != sorted(order), "the prompts' streams should interleave as they arrive"
    assert {(c["id"], c["created"]) for c in chunks} == {(chunks[0]["id"], chunks[0]["created"])}


async def test_stream_without_include_usage_has_no_usage_chunk(
    provider: OpenAIProvider,
) -> None:
    chunks = [
        c async for c in CompletionsViaChat(provider).stream(completion(["a", "b"], stream=True))
    ]
    assert all(c["choices"] for c in chunks)
    assert streamed(chunks)[0] == {0: "echo: a", 1: "echo: b"}


async def test_echo_prepends_the_prompt(provider: OpenAIProvider) -> None:
    wrapper = CompletionsViaChat(provider)
    body = (await wrapper.complete(completion(["a", "b"], echo=True))).body
    assert [c["text"] for c in body["choices"]] == ["aecho: a", "becho: b"]
    chunks = [c async for c in wrapper.stream(completion(["a", "b"], echo=True, stream=True))]
    assert streamed(chunks)[0] == {0: "aecho: a", 1: "becho: b"}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"prompt": [1, 2, 3]}, "prompt"),
        ({"prompt": [[1, 2], [3]]}, "prompt"),
        ({"suffix": " end"}, "suffix"),
        ({"best_of": 3}, "best_of"),
        ({"echo": True, "logprobs": 1}, "echo"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_unservable_requests_are_400_before_any_call(
    provider: OpenAIProvider,
    upstream: FakeOpenAIUpstream,
    extra: dict[str, Any],
    param: str,
    stream: bool,
) -> None:
    request = completion(**{"prompt": "hi", **extra, "stream": stream})
    wrapper = CompletionsViaChat(provider)
    with pytest.raises(UpstreamError) as caught:
        await answer(wrapper, request)
    assert (caught.value.status, caught.value.param) == (400, param)
    assert posted(upstream) == []


async def test_chat_passes_through(provider: OpenAIProvider, upstream: FakeOpenAIUpstream) -> None:
    wrapper = CompletionsViaChat(provider)
    body = (await wrapper.complete(chat("hey"))).body
    assert body["object"] == "chat.completion"
    assert posted(upstream) == [chat("hey").body]
    assert Endpoint.COMPLETIONS in wrapper.endpoints


async def test_consumer_closing_closes_every_inner_stream(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Ok(text=" ".join(f"w{i}" for i in range(40)), chunk_delay=0.05))
    request = completion(["a", "b", "c"], stream=True)
    async with contextlib.aclosing(CompletionsViaChat(provider).stream(request)) as chunks:
        async for _ in chunks:
            break
    closes = await asyncio.to_thread(upstream.wait_for_client_closes, 3)
    assert len(closes) == 3


class RecordedChat(Provider):
    """Answers every chat call with one recorded chat response (whole, or as chunks)."""

    def __init__(self, recorded: JSONObject) -> None:
        super().__init__("recorded")
        self.recorded = recorded
        self.requests: list[ProviderRequest] = []

    @property
    def endpoints(self) -> frozenset[Endpoint]:
        return frozenset({Endpoint.CHAT})

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        self.requests.append(request)
        return ProviderResponse(body=json.loads(json.dumps(self.recorded)))

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        self.requests.append(request)
        choice = self.recorded["choices"][0]
        head = {k: self.recorded[k] for k in ("id", "created", "model")}
        head["object"] = "chat.completion.chunk"
        role = {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}
        yield {**head, "choices": [role]}
        for entry in choice["logprobs"]["content"]:
            piece = {"content": entry["token"]}
            logprobs = {"content": [entry], "refusal": None}
            yield {
                **head,
                "choices": [
                    {"index": 0, "delta": piece, "logprobs": logprobs, "finish_reason": None}
                ],
            }
        end = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
        yield {**head, "choices": [end]}

    async def aclose(self) -> None:
        pass


EXPECTED_LOGPROBS = {
    "tokens": ["Hello", ",", " world"],
    "token_logprobs": [-0.25, -1.5, -0.75],
    "top_logprobs": [
        {"Hello": -0.25, "Hi": -1.75},
        {"!": -0.5, ",": -1.5},  # the sampled token is always listed
        {" world": -0.75, " there": -2.0},
    ],
    "text_offset": [0, 5, 6],
}


async def test_logprobs_map_to_completions_arrays() -> None:
    inner = RecordedChat(json.loads(RECORDED.read_text()))
    body = (await CompletionsViaChat(inner).complete(completion("Say hi", logprobs=1))).body

    Completion.model_validate(body)
    assert inner.requests[0].body["logprobs"] is True
    assert inner.requests[0].body["top_logprobs"] == 1
    [choice] = body["choices"]
    assert choice["text"] == "Hello, world"
    assert choice["finish_reason"] == "length"
    assert choice["logprobs"] == EXPECTED_LOGPROBS
    assert body["usage"] == {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}


async def test_streamed_logprobs_offsets_continue_per_index() -> None:
    inner = RecordedChat(json.loads(RECORDED.read_text()))
    request = completion(["p", "q"], logprobs=1, stream=True)
    chunks = [c async for c in CompletionsViaChat(inner).stream(request)]

    merged: dict[int, dict[str, list[Any]]] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            if choice["logprobs"] is not None:
                arrays = merged.setdefault(choice["index"], {k: [] for k in EXPECTED_LOGPROBS})
                for key, values in choice["logprobs"].items():
                    arrays[key].extend(values)
    assert merged == {0: EXPECTED_LOGPROBS, 1: EXPECTED_LOGPROBS}
    assert streamed(chunks)[1] == {0: ["length"], 1: ["length"]}


async def test_logprobs_not_asked_are_not_sent() -> None:
    inner = RecordedChat(json.loads(RECORDED.read_text()))
    body = (await CompletionsViaChat(inner).complete(completion("Say hi"))).body
    assert "logprobs" not in inner.requests[0].body
    assert body["choices"][0]["logprobs"] is None


async def test_suffix_becomes_a_fill_in_instruction_when_emulated(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    wrapper = CompletionsViaChat(provider, fill_suffix=True)
    body = (await wrapper.complete(completion(["def f(", "x ="], suffix=" end", echo=True))).body
    chats = [r.json["messages"] for r in upstream.requests]
    assert sorted(m[1]["content"] for m in chats) == [
        "<before>def f(</before>\n<after> end</after>",
        "<before>x =</before>\n<after> end</after>",
    ]
    assert all(m[0] == {"role": "system", "content": FILL_INSTRUCTION} for m in chats)
    assert all("suffix" not in r.json for r in upstream.requests)
    assert body["choices"][0]["text"].startswith("def f(echo: <before>def f(")


class _QuietFor(Provider):
    """A chat backend whose stream reports no usage for the prompt `quiet`."""

    def __init__(self, quiet: str) -> None:
        super().__init__("quiet")
        self.quiet = quiet

    @property
    def endpoints(self) -> frozenset[Endpoint]:
        return frozenset({Endpoint.CHAT})

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        raise NotImplementedError

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        choice = {"index": 0, "delta": {"content": "x"}, "finish_reason": "stop"}
        yield {"id": "c", "choices": [choice], "usage": None}
        if request.body["messages"][0]["content"] != self.quiet:
            usage = {"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}
            yield {"id": "c", "choices": [], "usage": usage}

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize(("quiet", "total"), [("b", None), ("none", 6)])
async def test_a_usage_some_prompts_lack_is_left_out_not_summed_in_part(
    quiet: str, total: int | None
) -> None:
    request = completion(["a", "b"], stream=True, stream_options={"include_usage": True})
    chunks = [c async for c in CompletionsViaChat(_QuietFor(quiet)).stream(request)]
    usages = [c["usage"]["total_tokens"] for c in chunks if c.get("usage") is not None]
    assert usages == ([] if total is None else [total])
