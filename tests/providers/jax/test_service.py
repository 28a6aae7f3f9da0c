"""`kind: jax` end to end through the official openai SDK, every answer checked against
the same model served with `kind: torch` by the same Turnout: greedy text identical,
logprobs within 1e-3, and the sampler's semantics (seed, stop, logit_bias, echo, n and
best_of on one prefill, the context window)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import openai
import pytest

from providers.jax.runner import JaxRunner
from providers.torch.loading import LoadedModel
from tests.local_sampler.reference import prompt_ids, text_token_ids
from tests.providers.jax.conftest import JAX_MODEL, MAX_CONTEXT, TORCH_MODEL, counted_compiles

STORY = "Once upon a time, in a small village,"
RECIPE = "To bake bread, you first"
FRANCE: Any = [{"role": "user", "content": "What is the capital of France?"}]
TOLERANCE = 1e-3


def complete(client: openai.OpenAI, model: str, **kwargs: Any) -> openai.types.Completion:
    kwargs.setdefault("prompt", STORY)
    kwargs.setdefault("max_tokens", 12)
    return client.completions.create(model=model, **kwargs)  # type: ignore[no-any-return]


def assert_logprobs_close(ours: Sequence[float | None], theirs: Sequence[float | None]) -> None:
    assert len(ours) == len(theirs)
    for mine, reference in zip(ours, theirs, strict=True):
        if reference is None:
            assert mine is None
        else:
            assert mine is not None
            assert math.isclose(mine, reference, abs_tol=TOLERANCE)


def test_greedy_chat_equals_torch_whole_and_streamed(client: openai.OpenAI) -> None:
    def chat(model: str) -> str | None:
        answer = client.chat.completions.create(
            model=model, messages=FRANCE, temperature=0, max_tokens=24
        )
        return answer.choices[0].message.content

    text = chat(JAX_MODEL)
    assert text is not None
    assert "Paris" in text
    assert text == chat(TORCH_MODEL)
    stream = client.chat.completions.create(
        model=JAX_MODEL, messages=FRANCE, temperature=0, max_tokens=24, stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == text


def test_greedy_completions_equal_torch_for_a_batch_of_prompts(client: openai.OpenAI) -> None:
    settings: dict[str, Any] = {"prompt": [STORY, RECIPE], "max_tokens": 16, "temperature": 0}
    ours = complete(client, JAX_MODEL, **settings)
    theirs = complete(client, TORCH_MODEL, **settings)
    assert [c.text for c in ours.choices] == [c.text for c in theirs.choices]
    assert all(c.text.strip() for c in ours.choices)
    assert ours.usage == theirs.usage
    stream = complete(client, JAX_MODEL, **settings, stream=True)
    streamed: dict[int, str] = {}
    for chunk in stream:
        for choice in chunk.choices:
            streamed[choice.index] = streamed.get(choice.index, "") + choice.text
    assert streamed == {c.index: c.text for c in ours.choices}


@pytest.mark.parametrize("temperature", [0.0, 1.3])
def test_completions_logprobs_equal_torchs_scores_of_the_same_tokens(
    client: openai.OpenAI, smollm2: LoadedModel, temperature: float
) -> None:
    """The tokens jax chose (greedy or sampled with its own keys), scored by the torch
    deployment through `echo`: the same logprobs and the same alternatives."""
    settings: dict[str, Any] = {"logprobs": 3, "max_tokens": 10, "temperature": temperature}
    choice = complete(client, JAX_MODEL, seed=5, **settings).choices[0]
    assert choice.logprobs is not None
    assert choice.logprobs.tokens is not None
    assert choice.logprobs.token_logprobs is not None
    assert choice.logprobs.top_logprobs is not None
    generated = text_token_ids(smollm2, choice.logprobs.tokens)
    ids = prompt_ids(smollm2, STORY) + generated
    scored = complete(client, TORCH_MODEL, prompt=ids, echo=True, logprobs=3, max_tokens=0)
    reference = scored.choices[0].logprobs
    assert reference is not None
    assert reference.token_logprobs is not None
    assert reference.top_logprobs is not None
    count = len(generated)
    assert_logprobs_close(choice.logprobs.token_logprobs, reference.token_logprobs[-count:])
    for mine, theirs in zip(
        choice.logprobs.top_logprobs, reference.top_logprobs[-count:], strict=True
    ):
        assert mine is not None
        assert theirs is not None
        assert best(mine, 3) == best(theirs, 3)
        for token in mine.keys() & theirs.keys():
            assert math.isclose(mine[token], theirs[token], abs_tol=TOLERANCE)
    if temperature == 0:
        greedy = complete(client, TORCH_MODEL, **settings).choices[0]
        assert greedy.text == choice.text


def best(top: dict[str, float], count: int) -> list[str]:
    return sorted(top, key=lambda token: -top[token])[:count]


def test_chat_logprobs_equal_torch(client: openai.OpenAI) -> None:
    def chat(model: str) -> Any:
        answer = client.chat.completions.create(
            model=model,
            messages=FRANCE,
            temperature=0,
            max_tokens=12,
            logprobs=True,
            top_logprobs=2,
        )
        return answer.choices[0].logprobs.content

    ours, theirs = chat(JAX_MODEL), chat(TORCH_MODEL)
    assert [e.token for e in ours] == [e.token for e in theirs]
    assert_logprobs_close([e.logprob for e in ours], [e.logprob for e in theirs])
    for mine, reference in zip(ours, theirs, strict=True):
        assert [a.token for a in mine.top_logprobs] == [a.token for a in reference.top_logprobs]
        assert_logprobs_close(
            [a.logprob for a in mine.top_logprobs], [a.logprob for a in reference.top_logprobs]
        )


def test_echo_scores_the_prompt_as_torch_does(client: openai.OpenAI) -> None:
    settings: dict[str, Any] = {"echo": True, "logprobs": 2, "temperature": 0, "max_tokens": 3}
    ours, theirs = (
        complete(client, JAX_MODEL, **settings),
        complete(client, TORCH_MODEL, **settings),
    )
    mine, reference = ours.choices[0], theirs.choices[0]
    assert mine.text == reference.text
    assert mine.text.startswith(STORY)
    assert mine.logprobs is not None
    assert reference.logprobs is not None
    assert mine.logprobs.tokens == reference.logprobs.tokens
    assert mine.logprobs.text_offset == reference.logprobs.text_offset
    assert mine.logprobs.token_logprobs is not None
    assert reference.logprobs.token_logprobs is not None
    assert mine.logprobs.token_logprobs[0] is None
    assert_logprobs_close(mine.logprobs.token_logprobs, reference.logprobs.token_logprobs)
    scored = complete(client, JAX_MODEL, echo=True, logprobs=1, max_tokens=0).choices[0]
    assert scored.text == STORY
    assert scored.logprobs is not None
    assert scored.logprobs.token_logprobs is not None
    assert_logprobs_close(
        scored.logprobs.token_logprobs,
        reference.logprobs.token_logprobs[: len(scored.logprobs.token_logprobs)],
    )


def test_seeds_reproduce_and_candidate_i_is_seed_plus_i(client: openai.OpenAI) -> None:
    def sampled(seed: int, **kwargs: Any) -> list[str]:
        answer = complete(client, JAX_MODEL, temperature=0.9, seed=seed, **kwargs)
        return [c.text for c in sorted(answer.choices, key=lambda c: c.index)]

    assert sampled(1234) == sampled(1234)
    assert len({sampled(1234)[0], sampled(1235)[0], sampled(99)[0]}) == 3
    three = sampled(500, n=3)
    assert three[1] == sampled(501)[0]
    assert three[0] == sampled(500)[0]


def test_stop_across_a_token_boundary_whole_and_streamed(client: openai.OpenAI) -> None:
    greedy = complete(client, JAX_MODEL, temperature=0, max_tokens=16, logprobs=0).choices[0]
    assert greedy.logprobs is not None
    tokens, offsets = greedy.logprobs.tokens, greedy.logprobs.text_offset
    assert tokens is not None
    assert offsets is not None
    stop = next(
        greedy.text[offsets[i] - 2 : offsets[i] + 2]
        for i in range(2, len(tokens))
        if len(tokens[i - 1]) >= 2
        and len(tokens[i]) >= 2
        and greedy.text.find(greedy.text[offsets[i] - 2 : offsets[i] + 2]) == offsets[i] - 2
    )
    expected = greedy.text[: greedy.text.find(stop)]
    settings: dict[str, Any] = {"temperature": 0, "max_tokens": 16, "stop": [stop, "@@@"]}
    stopped = complete(client, JAX_MODEL, **settings).choices[0]
    assert (stopped.text, stopped.finish_reason) == (expected, "stop")
    chunks = [c.choices[0] for c in complete(client, JAX_MODEL, **settings, stream=True)]
    assert "".join(c.text for c in chunks) == expected
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]


def test_logit_bias_forces_and_bans_as_torch_does(
    client: openai.OpenAI, smollm2: LoadedModel
) -> None:
    (paris,) = prompt_ids(smollm2, " Paris")
    settings: dict[str, Any] = {"max_tokens": 4, "logprobs": 0, "seed": 3}
    forced = complete(client, JAX_MODEL, logit_bias={str(paris): 100}, **settings).choices[0]
    reference = complete(client, TORCH_MODEL, logit_bias={str(paris): 100}, **settings)
    assert forced.text == " Paris" * 4
    assert forced.logprobs is not None
    assert forced.logprobs.token_logprobs is not None
    theirs = reference.choices[0].logprobs
    assert theirs is not None
    assert theirs.token_logprobs is not None
    # Reported logprobs are the model's, before the bias: far from certain, and equal.
    assert_logprobs_close(forced.logprobs.token_logprobs, theirs.token_logprobs)
    assert (forced.logprobs.token_logprobs[0] or 0) < -1

    greedy = complete(client, JAX_MODEL, temperature=0, max_tokens=3, logprobs=0).choices[0]
    assert greedy.logprobs is not None
    assert greedy.logprobs.tokens is not None
    first = text_token_ids(smollm2, greedy.logprobs.tokens)[0]
    ban: dict[str, Any] = {"temperature": 0, "max_tokens": 3, "logit_bias": {str(first): -100}}
    banned = complete(client, JAX_MODEL, logprobs=0, **ban).choices[0]
    assert banned.logprobs is not None
    assert banned.logprobs.tokens is not None
    assert text_token_ids(smollm2, banned.logprobs.tokens)[0] != first
    assert banned.text == complete(client, TORCH_MODEL, **ban).choices[0].text


def test_n_and_best_of_share_one_prefill(client: openai.OpenAI, served_jax: JaxRunner) -> None:
    before = served_jax.counts.prefills
    every = complete(client, JAX_MODEL, max_tokens=6, temperature=1.2, seed=77, n=3, logprobs=0)
    assert served_jax.counts.prefills - before == 1
    best = complete(
        client, JAX_MODEL, max_tokens=6, temperature=1.2, seed=77, n=1, best_of=3, logprobs=0
    )
    assert served_jax.counts.prefills - before == 2

    def mean_logprob(choice: openai.types.CompletionChoice) -> float:
        assert choice.logprobs is not None
        values = [v for v in choice.logprobs.token_logprobs or [] if v is not None]
        return sum(values) / len(values)

    assert [c.index for c in best.choices] == [0]
    assert best.choices[0].text == max(every.choices, key=mean_logprob).text


def test_context_overflow_is_a_400(client: openai.OpenAI, served_jax: JaxRunner) -> None:
    before = served_jax.counts.prefills
    with pytest.raises(openai.BadRequestError) as caught:
        complete(client, JAX_MODEL, prompt="hello " * (MAX_CONTEXT + 10), max_tokens=16)
    assert caught.value.code == "context_length_exceeded"
    assert str(MAX_CONTEXT) in caught.value.message
    assert served_jax.counts.prefills == before


def test_every_step_is_compiled_at_load_and_serving_compiles_nothing(
    client: openai.OpenAI, served_jax: JaxRunner
) -> None:
    """The runner compiled every prefill pass, batch, window and block-count bucket before
    /health/ready (the sampler its steps for every batch size); requests of new lengths,
    batch sizes and sampling settings then compile nothing, on any thread. Prompt scoring
    is the exception (see `CompiledSteps.ahead`): no echo with logprobs here."""
    buckets = served_jax.buckets
    ahead = {("prefill", s.rows, s.length, s.window, False) for s in buckets.chunk_shapes()}
    ahead |= {("decode", b, w) for b in buckets.batches() for w in buckets.windows()}
    ahead |= {("copy", window) for window in buckets.windows()}
    ahead |= {(step, n) for step in ("save", "load") for n in buckets.block_counts()}
    assert ahead <= served_jax.steps.compiled
    assert len(ahead) == 21 + 9 + 3 + 6
    sampled: dict[str, Any] = {
        "temperature": 0.9,
        "top_p": 0.8,
        "frequency_penalty": 0.4,
        "presence_penalty": 0.2,
        "logit_bias": {"11": 3},
        "seed": 3,
        "logprobs": 5,
    }
    with counted_compiles(this_thread_only=False) as compiles:
        complete(client, JAX_MODEL, prompt=[STORY, RECIPE * 3], n=2, max_tokens=6, **sampled)
        complete(client, JAX_MODEL, prompt="hello " * 100, max_tokens=3, temperature=0)
        answer = client.chat.completions.create(
            model=JAX_MODEL, messages=FRANCE, max_tokens=5, logprobs=True, top_logprobs=20
        )
    assert answer.choices[0].logprobs is not None
    assert compiles == []
