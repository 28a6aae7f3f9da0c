"""Greedy determinism, seeded sampling and logit_bias, through the official openai SDK."""

from __future__ import annotations

import openai

from providers.torch.loading import LoadedModel
from tests.local_sampler.conftest import CHAT_MODEL
from tests.local_sampler.prompts import FRANCE, STORY
from tests.local_sampler.reference import prompt_ids, text_token_ids
from tests.turnout_server import RunningTurnout


def complete(client: openai.OpenAI, **kwargs: object) -> openai.types.Completion:
    kwargs.setdefault("prompt", STORY)
    kwargs.setdefault("max_tokens", 12)
    return client.completions.create(model=CHAT_MODEL, **kwargs)  # type: ignore[call-overload,no-any-return]


def test_greedy_chat_is_deterministic_and_knows_paris(client: openai.OpenAI) -> None:
    answers = [
        client.chat.completions.create(
            model=CHAT_MODEL, messages=FRANCE, temperature=0, max_tokens=16
        )
        for _ in range(2)
    ]
    texts = [answer.choices[0].message.content for answer in answers]
    assert texts[0] == texts[1]
    assert texts[0] is not None
    assert "Paris" in texts[0]
    streamed = client.chat.completions.create(
        model=CHAT_MODEL, messages=FRANCE, temperature=0, max_tokens=16, stream=True
    )
    pieces = [chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices]
    assert "".join(pieces) == texts[0]


async def test_greedy_completions_are_deterministic(
    client: openai.OpenAI, server: RunningTurnout
) -> None:
    first = complete(client, temperature=0).choices[0].text
    assert first == complete(client, temperature=0).choices[0].text
    assert first.strip()
    async with server.async_client(timeout=120) as aclient:
        again = await aclient.completions.create(
            model=CHAT_MODEL, prompt=STORY, max_tokens=12, temperature=0
        )
        stream = await aclient.completions.create(
            model=CHAT_MODEL, prompt=STORY, max_tokens=12, temperature=0, stream=True
        )
        pieces = [chunk.choices[0].text async for chunk in stream if chunk.choices]
    assert again.choices[0].text == first
    assert "".join(pieces) == first


def test_same_seed_same_text_and_different_seeds_differ(client: openai.OpenAI) -> None:
    def sampled(seed: int) -> str:
        return complete(client, temperature=0.9, seed=seed).choices[0].text

    assert sampled(1234) == sampled(1234)
    assert len({sampled(1234), sampled(1235), sampled(99)}) == 3


def test_candidate_i_of_n_is_seeded_seed_plus_i(client: openai.OpenAI) -> None:
    three = complete(client, temperature=0.9, seed=500, n=3)
    texts = [choice.text for choice in sorted(three.choices, key=lambda c: c.index)]
    assert len(texts) == 3
    assert texts[1] == complete(client, temperature=0.9, seed=501).choices[0].text
    assert texts[0] == complete(client, temperature=0.9, seed=500).choices[0].text


def test_chat_seed_reproduces(client: openai.OpenAI) -> None:
    def sampled() -> str | None:
        answer = client.chat.completions.create(
            model=CHAT_MODEL, messages=FRANCE, temperature=0.9, seed=42, max_tokens=12
        )
        return answer.choices[0].message.content

    assert sampled() == sampled()


def test_logit_bias_plus_100_forces_a_token(
    client: openai.OpenAI, reference_model: LoadedModel
) -> None:
    (paris,) = prompt_ids(reference_model, " Paris")
    forced = complete(client, logit_bias={str(paris): 100}, max_tokens=6, logprobs=0, seed=3)
    choice = forced.choices[0]
    assert choice.logprobs is not None
    assert choice.logprobs.tokens is not None
    assert text_token_ids(reference_model, choice.logprobs.tokens) == [paris] * 6
    assert choice.text == " Paris" * 6
    # The reported logprobs are the model's own distribution, before the bias (as vLLM's).
    assert choice.logprobs.token_logprobs is not None
    assert choice.logprobs.token_logprobs[0] is not None
    assert choice.logprobs.token_logprobs[0] < -1


def test_logit_bias_minus_100_bans_the_greedy_token(
    client: openai.OpenAI, reference_model: LoadedModel
) -> None:
    greedy = complete(client, temperature=0, max_tokens=3, logprobs=0).choices[0]
    assert greedy.logprobs is not None
    assert greedy.logprobs.tokens is not None
    first = text_token_ids(reference_model, greedy.logprobs.tokens)[0]
    banned = complete(
        client, temperature=0, max_tokens=3, logprobs=0, logit_bias={str(first): -100}
    ).choices[0]
    assert banned.logprobs is not None
    assert banned.logprobs.tokens is not None
    assert text_token_ids(reference_model, banned.logprobs.tokens)[0] != first
    assert banned.text != greedy.text
