from __future__ import annotations

from collections.abc import AsyncGenerator

from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from providers.base import Provider
from providers.emulation import AggregatedResponse, SyntheticStream
from providers.openai.adapter import OpenAIProvider
from providers.types import Endpoint, JSONObject, ProviderRequest, ProviderResponse
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok

from .conftest import chat, chat_texts, completion, finishes, posted


async def collect(gen: AsyncGenerator[JSONObject, None]) -> list[JSONObject]:
    return [chunk async for chunk in gen]


async def test_chat_chunks_follow_the_stream_contract(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    whole = (await provider.complete(chat(n=2))).body
    request = chat(n=2, stream=True, stream_options={"include_usage": True})
    chunks = await collect(SyntheticStream(provider).stream(request))

    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    assert posted(upstream)[-1].keys().isdisjoint({"stream", "stream_options"})
    for index in (0, 1):
        mine = [c["choices"][0] for c in chunks if c["choices"]]
        mine = [c for c in mine if c["index"] == index]
        assert mine[0]["delta"] == {"role": "assistant", "content": ""}
        assert sum("role" in c["delta"] for c in mine) == 1
    assert chat_texts(chunks) == {i: whole["choices"][i]["message"]["content"] for i in (0, 1)}
    assert finishes(chunks) == {0: ["stop"], 1: ["stop"]}
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == whole["usage"]
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}


async def test_no_usage_chunk_unless_asked(provider: OpenAIProvider) -> None:
    chunks = await collect(SyntheticStream(provider).stream(chat(stream=True)))
    assert all(c["choices"] for c in chunks)
    assert all("usage" not in c for c in chunks)


async def test_completions_one_chunk_per_choice(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(Ok(text="one two three"))
    chunks = await collect(SyntheticStream(provider).stream(completion(["a", "b"], stream=True)))
    for chunk in chunks:
        Completion.model_validate(chunk)
    assert [(c["choices"][0]["index"], c["choices"][0]["text"]) for c in chunks] == [
        (0, "one two three"),
        (1, "one two three"),
    ]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == ["stop", "stop"]


RECORDED: JSONObject = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "system_fingerprint": None,
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": None,
                "refusal": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "f", "arguments": '{"x": 1}'},
                    },
                    {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}},
                ],
            },
            "logprobs": {
                "content": [{"token": "a", "logprob": -0.5, "bytes": [97], "top_logprobs": []}],
                "refusal": None,
            },
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
}


class Recorded(Provider):
    """Answers every call with one recorded whole response (a backend that cannot stream)."""

    def __init__(self, body: JSONObject) -> None:
        super().__init__("recorded")
        self.body = body

    @property
    def endpoints(self) -> frozenset[Endpoint]:
        return frozenset({Endpoint.CHAT})

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        return ProviderResponse(body=self.body)

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        raise AssertionError("cannot stream")
        yield {}

    async def aclose(self) -> None:
        pass


async def test_tool_calls_and_logprobs_survive_a_round_trip() -> None:
    synthetic = SyntheticStream(Recorded(RECORDED))
    chunks = await collect(synthetic.stream(chat(stream=True)))
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    calls = [c for ch in chunks for c in ch["choices"][0]["delta"].get("tool_calls") or []]
    assert [c["index"] for c in calls] == [0, 1]
    back = (await AggregatedResponse(synthetic).complete(chat())).body
    ChatCompletion.model_validate(back)
    assert back["choices"] == RECORDED["choices"]
    assert back["usage"] == RECORDED["usage"]
