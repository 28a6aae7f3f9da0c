from __future__ import annotations

from typing import Any

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from providers.emulation import ChatViaCompletions
from providers.emulation.text_logprobs import chat_logprobs
from providers.errors import UpstreamError
from providers.local.tokenizer_cache import DeclaredTokenizer
from providers.openai.adapter import OpenAIProvider
from providers.types import Endpoint, ProviderRequest
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok
from tests.local_tokenizer import smollm2_tokenizer

from .conftest import chat, completion, posted

MESSAGES: list[Any] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "hello world"},
]


def rendered(messages: list[Any] = MESSAGES) -> str:
    text = smollm2_tokenizer().apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    assert isinstance(text, str)
    return text


def request(**extra: Any) -> ProviderRequest:
    return ProviderRequest(Endpoint.CHAT, {"model": "base", "messages": MESSAGES, **extra})


async def test_the_messages_become_one_templated_prompt(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream, smol: DeclaredTokenizer
) -> None:
    body = (await ChatViaCompletions(provider, smol).complete(request(n=2, seed=3))).body
    ChatCompletion.model_validate(body)
    sent = upstream.requests[0]
    assert sent.path == "/v1/completions"
    assert sent.json["prompt"] == rendered()
    assert (sent.json["n"], sent.json["seed"], sent.json["max_tokens"]) == (2, 3, None)
    assert "messages" not in sent.json
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert [(c["index"], c["message"], c["finish_reason"]) for c in body["choices"]] == [
        (i, {"role": "assistant", "content": "echo: " + rendered(), "refusal": None}, "stop")
        for i in range(2)
    ]
    assert body["usage"]["prompt_tokens"] > 0


async def test_max_completion_tokens_becomes_max_tokens(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream, smol: DeclaredTokenizer
) -> None:
    wrapper = ChatViaCompletions(provider, smol)
    await wrapper.complete(request(max_completion_tokens=7))
    await wrapper.complete(request(max_tokens=9))
    assert [r["max_tokens"] for r in posted(upstream)] == [7, 9]
    assert all("max_completion_tokens" not in r for r in posted(upstream))


async def test_logprobs_come_back_as_chat_token_objects(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream, smol: DeclaredTokenizer
) -> None:
    upstream.enqueue(Ok(text="yes sir"))
    wrapper = ChatViaCompletions(provider, smol)
    body = (await wrapper.complete(request(logprobs=True, top_logprobs=2))).body
    assert posted(upstream)[0]["logprobs"] == 2
    content = body["choices"][0]["logprobs"]["content"]
    assert [t["token"] for t in content] == ["yes", " sir"]
    for entry in content:
        assert entry["bytes"] == list(entry["token"].encode())
        tops = [t["logprob"] for t in entry["top_logprobs"]]
        assert len(tops) == 2
        assert tops == sorted(tops, reverse=True)


async def test_the_stream_has_role_chunks_first_and_one_finish_per_index(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream, smol: DeclaredTokenizer
) -> None:
    upstream.enqueue(Ok(text="one two three"))
    streamed = request(n=2, stream=True, stream_options={"include_usage": True})
    chunks = [c async for c in ChatViaCompletions(provider, smol).stream(streamed)]
    for chunk in chunks:
        ChatCompletionChunk.model_validate(chunk)
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert chunks[0]["id"].startswith("chatcmpl-")
    seen: dict[int, list[Any]] = {}
    for chunk in chunks[:-1]:
        assert chunk["usage"] is None
        (choice,) = chunk["choices"]
        seen.setdefault(choice["index"], []).append(
            (choice["delta"].get("role"), choice["delta"].get("content"), choice["finish_reason"])
        )
    for events in seen.values():
        assert events[0] == ("assistant", "", None)
        assert "".join(e[1] or "" for e in events) == "one two three"
        assert [e[2] for e in events if e[2]] == ["stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 6


async def test_without_include_usage_there_is_no_usage_chunk(
    provider: OpenAIProvider, smol: DeclaredTokenizer
) -> None:
    chunks = [c async for c in ChatViaCompletions(provider, smol).stream(request(stream=True))]
    assert all(c["choices"] for c in chunks)
    assert all("usage" not in c for c in chunks)


async def test_other_endpoints_pass_and_a_rejected_template_is_a_400(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream, smol: DeclaredTokenizer
) -> None:
    wrapper = ChatViaCompletions(provider, smol)
    await wrapper.complete(completion("plain"))
    assert posted(upstream)[0]["prompt"] == "plain"
    image: Any = [{"type": "image_url", "image_url": {"url": "data:,"}}]
    with pytest.raises(UpstreamError) as caught:
        await wrapper.complete(chat(image))
    assert (caught.value.status, caught.value.param) == (400, "messages")
    assert len(posted(upstream)) == 1


def test_chat_logprobs_keep_the_top_alternatives_by_likelihood() -> None:
    mapped = chat_logprobs(
        {
            "tokens": ["a", "é"],
            "token_logprobs": [-0.5, -2.0],
            "top_logprobs": [{"a": -0.5, "b": -0.1, "c": -3.0}, {"é": -2.0}],
            "text_offset": [0, 1],
        },
        top=2,
    )
    assert mapped == {
        "content": [
            {
                "token": "a",
                "logprob": -0.5,
                "bytes": [97],
                "top_logprobs": [
                    {"token": "b", "logprob": -0.1, "bytes": [98]},
                    {"token": "a", "logprob": -0.5, "bytes": [97]},
                ],
            },
            {
                "token": "é",
                "logprob": -2.0,
                "bytes": [195, 169],
                "top_logprobs": [{"token": "é", "logprob": -2.0, "bytes": [195, 169]}],
            },
        ],
        "refusal": None,
    }
    assert chat_logprobs(None, 2) is None
