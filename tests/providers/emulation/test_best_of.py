from __future__ import annotations

import json
from collections.abc import AsyncGenerator, Sequence

import pytest
from openai.types import Completion

from providers.base import Provider
from providers.emulation import BestOfEmulation
from providers.errors import UpstreamError
from providers.openai.adapter import OpenAIProvider
from providers.types import Endpoint, JSONObject, ProviderRequest, ProviderResponse
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Status

from .conftest import chat, completion, posted

# Mean and sum disagree: by mean long > mid > short, by sum short > mid > long.
LONG = [-0.5, -0.5, -0.5, -0.5]  # sum -2.0, mean -0.5
MID = [-0.9, -0.9]  # sum -1.8, mean -0.9
SHORT = [-1.0]  # sum -1.0, mean -1.0
# Nulls ignored: mean -1.2, below SHORT; read as 0 they would give -0.6, above it.
NULL_FIRST = [None, -1.2]


def candidate(text: str, token_logprobs: Sequence[float | None], index: int) -> JSONObject:
    tokens = [f"t{i}" for i in range(len(token_logprobs))]
    return {
        "text": text,
        "index": index,
        "logprobs": {
            "tokens": tokens,
            "token_logprobs": list(token_logprobs),
            "top_logprobs": [
                None if lp is None else {t: lp}
                for t, lp in zip(tokens, token_logprobs, strict=True)
            ],
            "text_offset": [2 * i for i in range(len(tokens))],
        },
        "finish_reason": "stop",
    }


def answer(
    *candidates: tuple[str, Sequence[float | None]], completion_tokens: int = 7
) -> JSONObject:
    return {
        "id": "cmpl-recorded",
        "object": "text_completion",
        "created": 1700000000,
        "model": "gpt-4o-mini",
        "choices": [candidate(text, lps, i) for i, (text, lps) in enumerate(candidates)],
        "usage": {
            "prompt_tokens": 2,
            "completion_tokens": completion_tokens,
            "total_tokens": 2 + completion_tokens,
        },
    }


class RecordedProvider(Provider):
    """Answers every call with the same recorded completion and keeps the requests."""

    def __init__(self, body: JSONObject) -> None:
        super().__init__("recorded")
        self.body = body
        self.requests: list[ProviderRequest] = []

    @property
    def endpoints(self) -> frozenset[Endpoint]:
        return frozenset({Endpoint.COMPLETIONS, Endpoint.CHAT})

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        self.requests.append(request)
        return ProviderResponse(body=json.loads(json.dumps(self.body)))

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        self.requests.append(request)
        yield {"choices": []}

    async def aclose(self) -> None:
        pass


def canned(body: JSONObject) -> Status:
    """A 200 whose body is `body`: the fake's way to answer with recorded logprobs."""
    return Status(200, body=json.dumps(body).encode())


def texts(body: JSONObject) -> list[tuple[int, str]]:
    return [(c["index"], c["text"]) for c in body["choices"]]


@pytest.mark.parametrize(("n", "kept"), [(1, ["long"]), (2, ["long", "mid"])])
async def test_ranks_by_mean_logprob_not_sum(n: int, kept: list[str]) -> None:
    inner = RecordedProvider(answer(("short", SHORT), ("mid", MID), ("long", LONG)))
    body = (
        await BestOfEmulation(inner, max_native_n=None).complete(completion(best_of=3, n=n))
    ).body

    Completion.model_validate(body)
    assert texts(body) == list(enumerate(kept))
    [sent] = [r.body for r in inner.requests]
    assert "best_of" not in sent
    assert (sent["n"], sent["logprobs"]) == (3, 0)


async def test_top_n_of_each_prompt_reindexed_through_the_real_provider(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    recorded = answer(
        ("p-short", SHORT),
        ("p-long", LONG),
        ("p-mid", MID),
        ("q-null", NULL_FIRST),
        ("q-mid", MID),
        ("q-short", SHORT),
        completion_tokens=13,
    )
    upstream.enqueue(canned(recorded))
    request = completion(["p", "q"], best_of=3, n=2)
    body = (await BestOfEmulation(provider, max_native_n=None).complete(request)).body

    Completion.model_validate(body)
    assert texts(body) == [(0, "p-long"), (1, "p-mid"), (2, "q-mid"), (3, "q-short")]
    assert all(c["logprobs"] is None for c in body["choices"]), "not asked for: stripped"
    assert body["usage"] == recorded["usage"], "every candidate's tokens are billed"
    [sent] = posted(upstream)
    assert "best_of" not in sent
    assert (sent["n"], sent["logprobs"], sent["prompt"]) == (3, 0, ["p", "q"])


@pytest.mark.parametrize("asked", [0, 2])
async def test_logprobs_kept_when_asked(asked: int) -> None:
    recorded = answer(("short", SHORT), ("long", LONG))
    inner = RecordedProvider(recorded)
    request = completion(best_of=2, logprobs=asked)
    body = (await BestOfEmulation(inner, max_native_n=None).complete(request)).body

    Completion.model_validate(body)
    [choice] = body["choices"]
    assert choice["logprobs"] == recorded["choices"][1]["logprobs"]
    assert inner.requests[0].body["logprobs"] == asked


async def test_fans_out_without_native_n_and_bills_all_candidates(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(
        canned(answer(("short", SHORT), completion_tokens=1)),
        canned(answer(("long", LONG), completion_tokens=4)),
        canned(answer(("mid", MID), completion_tokens=2)),
    )
    request = completion(best_of=3, seed=7, max_tokens=5)
    body = (await BestOfEmulation(provider, max_native_n=1).complete(request)).body

    Completion.model_validate(body)
    assert texts(body) == [(0, "long")]
    assert body["choices"][0]["logprobs"] is None
    sent = posted(upstream)
    assert sorted(b["seed"] for b in sent) == [7, 8, 9]
    assert {(b["n"], b["logprobs"], b["max_tokens"]) for b in sent} == {(1, 0, 5)}
    assert not any("best_of" in b for b in sent)
    # Every candidate's call: its prompt (2 each) and its completion (1 + 4 + 2).
    assert body["usage"] == {"prompt_tokens": 6, "completion_tokens": 7, "total_tokens": 13}


async def test_backend_without_logprobs_is_an_upstream_error(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    # A backend that ignores `logprobs`: its choices carry `"logprobs": null`.
    ignored = answer(("a", []), ("b", []))
    for choice in ignored["choices"]:
        choice["logprobs"] = None
    upstream.enqueue(canned(ignored))
    with pytest.raises(UpstreamError) as caught:
        await BestOfEmulation(provider, max_native_n=None).complete(completion(best_of=2))
    assert (caught.value.status, caught.value.type) == (502, "upstream_protocol_error")
    assert "no logprobs" in caught.value.message


async def test_stream_with_best_of_above_n_is_a_400(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    stream = BestOfEmulation(provider, max_native_n=None).stream(completion(best_of=3, stream=True))
    with pytest.raises(UpstreamError) as caught:
        async for _ in stream:
            pass
    assert (caught.value.status, caught.value.param) == (400, "best_of")
    assert "best_of" in caught.value.message
    assert posted(upstream) == []


async def test_stream_with_best_of_equal_to_n_passes_through_without_it(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    request = completion(best_of=2, n=2, stream=True, seed=1)
    chunks = [c async for c in BestOfEmulation(provider, max_native_n=1).stream(request)]

    assert {c["choices"][0]["index"] for c in chunks if c["choices"]} == {0, 1}
    sent = posted(upstream)
    assert sorted(b["seed"] for b in sent) == [1, 2]
    assert not any("best_of" in b or "logprobs" in b for b in sent)


async def test_best_of_equal_to_n_needs_no_logprobs(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    body = await BestOfEmulation(provider, max_native_n=None).complete(completion(best_of=2, n=2))
    assert texts(body.body) == [(0, "echo: hello world"), (1, "echo: hello world")]
    [sent] = posted(upstream)
    assert "best_of" not in sent
    assert "logprobs" not in sent


async def test_best_of_below_n_is_a_400() -> None:
    inner = RecordedProvider(answer(("a", SHORT)))
    with pytest.raises(UpstreamError) as caught:
        await BestOfEmulation(inner, max_native_n=None).complete(completion(best_of=2, n=3))
    assert (caught.value.status, caught.value.param) == (400, "best_of")
    assert inner.requests == []


async def test_chat_passes_through_untouched(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    request = chat(best_of=3)
    await BestOfEmulation(provider, max_native_n=1).complete(request)
    assert posted(upstream) == [request.body]


async def test_candidates_beyond_the_native_n_are_fanned_out(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(
        canned(answer(("short", SHORT))),
        canned(answer(("long", LONG))),
        canned(answer(("mid", MID))),
    )
    request = completion(best_of=3, n=2, seed=1)
    body = (await BestOfEmulation(provider, max_native_n=2).complete(request)).body
    assert texts(body) == [(0, "long"), (1, "mid")]
    assert sorted((b["n"], b["seed"]) for b in posted(upstream)) == [(1, 1), (1, 2), (1, 3)]
