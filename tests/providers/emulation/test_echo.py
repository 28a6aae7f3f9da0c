from __future__ import annotations

import pytest
from openai.types import Completion

from providers.emulation import EchoEmulation, FanOutN
from providers.errors import UpstreamError
from providers.openai.adapter import OpenAIProvider
from tests.fakes.openai_upstream import FakeOpenAIUpstream

from .conftest import answer, chat, completion, posted


async def test_whole_prepends_each_prompt_to_its_choices(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    body = (await EchoEmulation(provider).complete(completion(["a", "b"], n=2, echo=True))).body

    Completion.model_validate(body)
    assert "echo" not in posted(upstream)[0]
    assert [(c["index"], c["text"]) for c in body["choices"]] == [
        (0, "aecho: a"),
        (1, "aecho: a"),
        (2, "becho: b"),
        (3, "becho: b"),
    ]


async def test_streamed_prompt_comes_first_once_per_index(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    request = completion(["a b", "c"], n=2, echo=True, stream=True)
    chunks = [c async for c in EchoEmulation(provider).stream(request)]

    assert "echo" not in posted(upstream)[0]
    texts: dict[int, str] = {}
    firsts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            firsts.setdefault(choice["index"], choice["text"])
            texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
    assert texts == {0: "a becho: a b", 1: "a becho: a b", 2: "cecho: c", 3: "cecho: c"}
    assert firsts == {0: "a becho:", 1: "a becho:", 2: "cecho:", 3: "cecho:"}


async def test_echo_over_fanned_out_n(provider: OpenAIProvider) -> None:
    request = completion(["x", "y"], n=2, echo=True)
    body = (await EchoEmulation(FanOutN(provider)).complete(request)).body
    assert [c["text"] for c in body["choices"]] == ["xecho: x", "xecho: x", "yecho: y", "yecho: y"]


async def test_no_echo_passes_through(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    wrapper = EchoEmulation(provider)
    assert (await wrapper.complete(completion("a", echo=False))).body["choices"][0]["text"] == (
        "echo: a"
    )
    await wrapper.complete(chat("hi", echo=True))
    assert posted(upstream) == [completion("a", echo=False).body, chat("hi", echo=True).body]


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"logprobs": 2}, "echo"),
        ({"logprobs": 0}, "echo"),
        ({"prompt": [5, 6, 7]}, "prompt"),
        ({"prompt": [[5], [6, 7]]}, "prompt"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_unservable_echo_is_400_before_any_call(
    provider: OpenAIProvider,
    upstream: FakeOpenAIUpstream,
    extra: dict[str, object],
    param: str,
    stream: bool,
) -> None:
    request = completion(**{"prompt": "hi", "echo": True, **extra, "stream": stream})
    wrapper = EchoEmulation(provider)
    with pytest.raises(UpstreamError) as caught:
        await answer(wrapper, request)
    assert (caught.value.status, caught.value.param) == (400, param)
    assert posted(upstream) == []
