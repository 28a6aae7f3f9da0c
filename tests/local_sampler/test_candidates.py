"""n, best_of and prompt batches: candidates share one prefill, choices are indexed
prompt_index * n + i, best_of keeps the candidate with the best mean logprob."""

from __future__ import annotations

from statistics import fmean

import openai
import pytest

from providers.torch.runner import TorchRunner
from tests.local_sampler.conftest import CHAT_MODEL
from tests.local_sampler.prompts import RECIPE, STORY


def test_n_candidates_share_one_prefill(client: openai.OpenAI, runner: TorchRunner) -> None:
    before = runner.counts.prefills
    answer = client.completions.create(
        model=CHAT_MODEL, prompt=STORY, max_tokens=4, n=4, temperature=1.0, seed=8
    )
    assert runner.counts.prefills - before == 1
    assert sorted(choice.index for choice in answer.choices) == [0, 1, 2, 3]


def test_chat_n_shares_one_prefill(client: openai.OpenAI, runner: TorchRunner) -> None:
    before = runner.counts.prefills
    answer = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=[{"role": "user", "content": "Name a color."}],
        max_tokens=4,
        n=3,
        seed=4,
    )
    assert runner.counts.prefills - before == 1
    assert sorted(choice.index for choice in answer.choices) == [0, 1, 2]


def test_best_of_returns_the_candidate_with_the_best_mean_logprob(
    client: openai.OpenAI, runner: TorchRunner
) -> None:
    def sample(n: int, best_of: int) -> openai.types.Completion:
        return client.completions.create(
            model=CHAT_MODEL,
            prompt=STORY,
            max_tokens=6,
            temperature=1.2,
            seed=77,
            logprobs=0,
            n=n,
            best_of=best_of,
        )

    before = runner.counts.prefills
    best = sample(n=1, best_of=3)
    assert runner.counts.prefills - before == 1
    assert [choice.index for choice in best.choices] == [0]
    # The same seeds without best_of: all three candidates (candidate i is seeded seed + i).
    every = sample(n=3, best_of=3)

    def mean_logprob(choice: openai.types.CompletionChoice) -> float:
        assert choice.logprobs is not None
        assert choice.logprobs.token_logprobs is not None
        return fmean(v for v in choice.logprobs.token_logprobs if v is not None)

    candidates = sorted(every.choices, key=mean_logprob, reverse=True)
    assert len({choice.text for choice in candidates}) > 1, "candidates should differ"
    assert best.choices[0].text == candidates[0].text
    assert best.choices[0].text != candidates[-1].text
    assert best.usage is not None
    assert every.usage is not None
    assert best.usage.completion_tokens == every.usage.completion_tokens


def test_prompt_batch_with_n_indexes_prompt_major(
    client: openai.OpenAI, runner: TorchRunner
) -> None:
    singles = [
        client.completions.create(model=CHAT_MODEL, prompt=prompt, max_tokens=5, temperature=0)
        .choices[0]
        .text
        for prompt in (STORY, RECIPE)
    ]
    passes, computed = runner.counts.prefills, runner.counts.prefill_tokens
    answer = client.completions.create(
        model=CHAT_MODEL, prompt=[STORY, RECIPE], max_tokens=5, temperature=0, n=2
    )
    # Each prompt is prefilled once for its n candidates: the two prompts in at most two
    # passes (one batched pass here), at most their own tokens computed (the prefix store
    # holds their heads from the single requests above, so fewer).
    assert answer.usage is not None
    assert 1 <= runner.counts.prefills - passes <= 2
    assert 0 < runner.counts.prefill_tokens - computed <= answer.usage.prompt_tokens
    by_index = {choice.index: choice.text for choice in answer.choices}
    assert by_index == {0: singles[0], 1: singles[0], 2: singles[1], 3: singles[1]}

    stream = client.completions.create(
        model=CHAT_MODEL, prompt=[STORY, RECIPE], max_tokens=5, temperature=0, n=2, stream=True
    )
    streamed: dict[int, str] = {}
    for chunk in stream:
        for choice in chunk.choices:
            streamed[choice.index] = streamed.get(choice.index, "") + choice.text
    assert streamed == by_index


def test_best_of_cannot_be_streamed(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(
            model=CHAT_MODEL, prompt=STORY, max_tokens=4, best_of=2, stream=True
        )
    assert "best_of" in caught.value.message
    body = caught.value.body
    assert isinstance(body, dict)
    assert body.get("param") == "best_of"


def test_more_candidates_than_slots_is_a_400_naming_the_parameter(
    client: openai.OpenAI, runner: TorchRunner
) -> None:
    before = runner.counts.prefills
    for n, best_of, param in ((9, 9, "n"), (1, 9, "best_of")):
        with pytest.raises(openai.BadRequestError) as caught:
            client.completions.create(
                model=CHAT_MODEL, prompt=STORY, max_tokens=2, n=n, best_of=best_of
            )
        body = caught.value.body
        assert isinstance(body, dict)
        assert body.get("param") == param
    assert runner.counts.prefills == before
