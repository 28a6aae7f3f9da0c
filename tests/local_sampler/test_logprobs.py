"""Logprobs: the wire shapes of both endpoints, `echo`, and every reported value checked
against an independent transformers forward pass over the same tokens."""

from __future__ import annotations

import math

import openai
import pytest

from providers.torch.loading import LoadedModel
from tests.local_sampler.conftest import CHAT_MODEL
from tests.local_sampler.prompts import FRANCE, STORY
from tests.local_sampler.reference import (
    chat_ids,
    log_softmax,
    prompt_ids,
    text_token_ids,
    token_bytes,
    token_id,
)

TOLERANCE = 1e-3


def test_completions_logprobs_shape(client: openai.OpenAI) -> None:
    choice = client.completions.create(
        model=CHAT_MODEL, prompt=STORY, max_tokens=10, logprobs=3, seed=11
    ).choices[0]
    logprobs = choice.logprobs
    assert logprobs is not None
    tokens, chosen = logprobs.tokens, logprobs.token_logprobs
    tops, offsets = logprobs.top_logprobs, logprobs.text_offset
    assert tokens is not None
    assert chosen is not None
    assert tops is not None
    assert offsets is not None
    assert len(tokens) == len(chosen) == len(tops) == len(offsets) == 10
    assert "".join(tokens) == choice.text
    assert offsets == sorted(offsets)
    assert offsets[0] == 0
    for token, logprob, top, offset in zip(tokens, chosen, tops, offsets, strict=True):
        assert choice.text[offset : offset + len(token)] == token
        assert top is not None
        assert 3 <= len(top) <= 4
        assert logprob is not None
        assert top[token] == logprob
        assert logprob <= 0
        assert all(value <= 0 for value in top.values())


def test_chat_logprobs_shape(client: openai.OpenAI) -> None:
    choice = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=FRANCE,
        max_tokens=10,
        logprobs=True,
        top_logprobs=5,
        temperature=0,  # a plain-ASCII answer: every token is whole characters
    ).choices[0]
    assert choice.logprobs is not None
    assert choice.logprobs.content
    content = choice.logprobs.content
    assert "".join(entry.token for entry in content) == choice.message.content
    for entry in content:
        assert entry.bytes == list(entry.token.encode())
        assert len(entry.top_logprobs) == 5
        for alternative in entry.top_logprobs:
            assert alternative.bytes == list(alternative.token.encode())
        values = [alternative.logprob for alternative in entry.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert values[0] >= entry.logprob


@pytest.mark.parametrize("temperature", [0.0, 1.3])
def test_completions_logprobs_match_the_reference_model(
    client: openai.OpenAI, reference_model: LoadedModel, temperature: float
) -> None:
    choice = client.completions.create(
        model=CHAT_MODEL,
        prompt=STORY,
        max_tokens=10,
        logprobs=3,
        temperature=temperature,
        seed=5,
    ).choices[0]
    logprobs = choice.logprobs
    assert logprobs is not None
    assert logprobs.tokens is not None
    assert logprobs.token_logprobs is not None
    assert logprobs.top_logprobs is not None
    prompt = prompt_ids(reference_model, STORY)
    generated = text_token_ids(reference_model, logprobs.tokens)
    reference = log_softmax(reference_model, prompt + generated)
    for step, (token, reported, top) in enumerate(
        zip(generated, logprobs.token_logprobs, logprobs.top_logprobs, strict=True)
    ):
        row = reference[len(prompt) + step - 1]
        assert reported is not None
        assert math.isclose(reported, row[token].item(), abs_tol=TOLERANCE)
        assert top is not None
        for text, value in top.items():
            assert math.isclose(
                value, row[token_id(reference_model, token_bytes(text))].item(), abs_tol=TOLERANCE
            )
        best = row.topk(3).values.tolist()
        shown = sorted(top.values(), reverse=True)[:3]
        assert all(math.isclose(a, b, abs_tol=TOLERANCE) for a, b in zip(best, shown, strict=True))


def test_chat_logprobs_match_the_reference_model(
    client: openai.OpenAI, reference_model: LoadedModel
) -> None:
    choice = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=FRANCE,
        max_tokens=12,
        logprobs=True,
        top_logprobs=2,
        temperature=0.8,
        seed=21,
    ).choices[0]
    assert choice.logprobs is not None
    assert choice.logprobs.content
    prompt = chat_ids(reference_model, FRANCE)
    generated = [token_id(reference_model, bytes(e.bytes or [])) for e in choice.logprobs.content]
    reference = log_softmax(reference_model, prompt + generated)
    for step, entry in enumerate(choice.logprobs.content):
        row = reference[len(prompt) + step - 1]
        assert math.isclose(entry.logprob, row[generated[step]].item(), abs_tol=TOLERANCE)
        for alternative in entry.top_logprobs:
            alternative_id = token_id(reference_model, bytes(alternative.bytes or []))
            assert math.isclose(alternative.logprob, row[alternative_id].item(), abs_tol=TOLERANCE)


def test_echo_returns_prompt_and_completion_with_prompt_logprobs(
    client: openai.OpenAI, reference_model: LoadedModel
) -> None:
    plain = client.completions.create(
        model=CHAT_MODEL, prompt=STORY, max_tokens=5, temperature=0
    ).choices[0]
    answer = client.completions.create(
        model=CHAT_MODEL, prompt=STORY, max_tokens=5, temperature=0, echo=True, logprobs=2
    )
    choice = answer.choices[0]
    assert choice.text == STORY + plain.text
    logprobs = choice.logprobs
    assert logprobs is not None
    assert logprobs.tokens is not None
    assert logprobs.token_logprobs is not None
    assert logprobs.top_logprobs is not None
    assert logprobs.text_offset is not None
    prompt = prompt_ids(reference_model, STORY)
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == len(prompt)
    assert len(logprobs.tokens) == len(prompt) + 5
    assert text_token_ids(reference_model, logprobs.tokens[: len(prompt)]) == prompt
    assert logprobs.token_logprobs[0] is None
    assert logprobs.top_logprobs[0] is None
    assert logprobs.text_offset[0] == 0
    assert "".join(logprobs.tokens) == choice.text
    for token, offset in zip(logprobs.tokens, logprobs.text_offset, strict=True):
        assert choice.text[offset : offset + len(token)] == token
    reference = log_softmax(reference_model, prompt)
    for position in range(1, len(prompt)):
        reported = logprobs.token_logprobs[position]
        expected = reference[position - 1, prompt[position]].item()
        assert reported is not None
        assert math.isclose(reported, expected, abs_tol=TOLERANCE)
        top = logprobs.top_logprobs[position]
        assert top is not None
        assert 2 <= len(top) <= 3


def test_echo_with_max_tokens_0_returns_exactly_the_scored_prompt(
    client: openai.OpenAI, reference_model: LoadedModel
) -> None:
    answer = client.completions.create(
        model=CHAT_MODEL, prompt=STORY, max_tokens=0, echo=True, logprobs=1
    )
    choice = answer.choices[0]
    assert choice.text == STORY
    prompt = prompt_ids(reference_model, STORY)
    assert choice.logprobs is not None
    assert choice.logprobs.tokens is not None
    assert choice.logprobs.token_logprobs is not None
    assert text_token_ids(reference_model, choice.logprobs.tokens) == prompt
    assert choice.logprobs.token_logprobs[0] is None
    assert all(value is not None for value in choice.logprobs.token_logprobs[1:])
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (len(prompt), 0)
