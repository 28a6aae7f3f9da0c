"""The sampling pipeline on crafted logits: each step's effect, seeding, and what logprobs
report."""

from __future__ import annotations

import math

import pytest
import torch

from providers.local.runner import RowSampling
from providers.torch.sampling import TorchSampler, apply_penalties, apply_top_p

VOCAB = 50


@pytest.fixture
def sampler() -> TorchSampler:
    return TorchSampler()


def random_logits(rows: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, VOCAB, generator=generator) * 3


def test_temperature_zero_is_argmax(sampler: TorchSampler) -> None:
    logits = random_logits(8)
    rows = [RowSampling(temperature=0) for _ in range(8)]
    tokens = [sampled.token for sampled in sampler.sample(logits, rows)]
    assert tokens == logits.argmax(dim=-1).tolist()


def test_logit_bias_forces_and_bans(sampler: TorchSampler) -> None:
    logits = random_logits(2)
    best = int(logits[0].argmax())
    forced = int(logits[1].argmin())
    rows = [
        RowSampling(temperature=0, logit_bias={best: -100}),
        RowSampling(temperature=1, seed=3, logit_bias={forced: 100}),
    ]
    banned, chosen = sampler.sample(logits, rows)
    assert banned.token != best
    assert banned.token == int(logits[0].topk(2).indices[1])
    assert chosen.token == forced
    # The logprob is the model's, not the biased distribution's.
    assert chosen.logprob == pytest.approx(float(torch.log_softmax(logits[1], -1)[forced]))


def test_logit_bias_outside_the_vocabulary_is_refused(sampler: TorchSampler) -> None:
    with pytest.raises(ValueError, match="outside the vocabulary"):
        sampler.sample(random_logits(1), [RowSampling(temperature=0, logit_bias={VOCAB: 1})])


def test_penalty_formula_counts_generated_tokens() -> None:
    logits = torch.zeros(2, 5)
    rows = [
        RowSampling(generated=[1, 1, 1, 3], frequency_penalty=0.5, presence_penalty=2.0),
        RowSampling(generated=[1, 2]),  # no penalties: untouched
    ]
    penalized = apply_penalties(logits, rows)
    assert penalized[0].tolist() == [0.0, -(3 * 0.5 + 2.0), 0.0, -(0.5 + 2.0), 0.0]
    assert penalized[1].tolist() == [0.0] * 5


def test_penalties_steer_greedy_choice(sampler: TorchSampler) -> None:
    logits = torch.tensor([[3.0, 2.5, 0.0]])
    row = RowSampling(temperature=0, generated=[0], presence_penalty=1.0)
    assert sampler.sample(logits, [row])[0].token == 1


def test_top_p_keeps_the_smallest_set_reaching_the_mass() -> None:
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.5, 0.3, 0.15, 0.05]])
    logits = probs.log()
    rows = [RowSampling(top_p=0.8), RowSampling(top_p=0.81)]
    kept = apply_top_p(logits, rows).isfinite()
    assert kept[0].tolist() == [True, True, False, False]  # 0.5 + 0.3 reaches 0.8
    assert kept[1].tolist() == [True, True, True, False]


def test_top_p_samples_only_from_the_kept_set(sampler: TorchSampler) -> None:
    probs = torch.tensor([0.05, 0.4, 0.02, 0.3, 0.2, 0.03])
    logits = probs.log()[None].repeat(64, 1)
    rows = [RowSampling(top_p=0.75, seed=seed) for seed in range(64)]
    tokens = {sampled.token for sampled in sampler.sample(logits, rows)}
    assert tokens == {1, 3, 4}  # 0.4 + 0.3 < 0.75, so the third-best (0.2) is kept too


def test_top_p_zero_is_greedy(sampler: TorchSampler) -> None:
    logits = random_logits(16)
    rows = [RowSampling(top_p=0.0, seed=seed) for seed in range(16)]
    tokens = [sampled.token for sampled in sampler.sample(logits, rows)]
    assert tokens == logits.argmax(dim=-1).tolist()


def test_same_seed_same_samples_different_seeds_differ(sampler: TorchSampler) -> None:
    logits = torch.zeros(1, VOCAB)  # uniform: every draw is the generator's

    def draws(seed: int) -> list[int]:
        row = RowSampling(seed=seed)
        return [sampler.sample(logits, [row])[0].token for _ in range(20)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)
    unseeded = [RowSampling(), RowSampling()]
    for _ in range(20):
        sampler.sample(logits.repeat(2, 1), unseeded)
    assert unseeded[0].generator.initial_seed() != unseeded[1].generator.initial_seed()


def test_rows_draw_independently_of_their_batch(sampler: TorchSampler) -> None:
    logits = torch.zeros(3, VOCAB)
    alone = sampler.sample(logits[:1], [RowSampling(seed=5)])[0].token
    batch = [RowSampling(seed=1), RowSampling(seed=5), RowSampling(temperature=0)]
    assert sampler.sample(logits, batch)[1].token == alone


def test_temperature_sharpens_the_distribution(sampler: TorchSampler) -> None:
    logits = torch.tensor([[2.0, 1.0, 0.0]]).repeat(200, 1)
    cold = [RowSampling(temperature=0.05, seed=seed) for seed in range(200)]
    hot = [RowSampling(temperature=5.0, seed=seed) for seed in range(200)]
    assert {sampled.token for sampled in sampler.sample(logits, cold)} == {0}
    assert {sampled.token for sampled in sampler.sample(logits, hot)} == {0, 1, 2}


def test_logprob_and_top_list_come_from_the_raw_distribution(sampler: TorchSampler) -> None:
    logits = random_logits(4, seed=1)
    expected = torch.log_softmax(logits, dim=-1)
    rows = [
        RowSampling(temperature=0, top_logprobs=5),
        RowSampling(temperature=0.7, seed=1, top_logprobs=3, logit_bias={0: 5}),
        RowSampling(temperature=1, seed=2),
        RowSampling(temperature=0, top_logprobs=1, presence_penalty=1, generated=[2]),
    ]
    results = sampler.sample(logits, rows)
    for index, (row, sampled) in enumerate(zip(rows, results, strict=True)):
        assert sampled.logprob == pytest.approx(float(expected[index, sampled.token]))
        assert len(sampled.top) == row.top_logprobs
        values = [logprob for _, logprob in sampled.top]
        assert values == sorted(values, reverse=True)
        best = expected[index].topk(row.top_logprobs) if row.top_logprobs else None
        if best is not None:
            assert [token for token, _ in sampled.top] == best.indices.tolist()
    best_token, best_logprob = results[0].top[0]
    assert best_token == results[0].token
    assert best_logprob == pytest.approx(results[0].logprob)


def test_score_prompt(sampler: TorchSampler) -> None:
    logits = random_logits(5, seed=2)
    tokens = [4, 9, 0, 31, 7]
    scores = sampler.score_prompt(logits, tokens, top=3)
    expected = torch.log_softmax(logits, dim=-1)
    assert len(scores.logprobs) == len(scores.top) == len(tokens)
    assert scores.logprobs[0] is None
    assert scores.top[0] is None
    for position in range(1, len(tokens)):
        logprob = scores.logprobs[position]
        assert logprob is not None
        assert math.isclose(logprob, float(expected[position - 1, tokens[position]]), rel_tol=1e-6)
        top = scores.top[position]
        assert top is not None
        assert len(top) == 3
        assert [token for token, _ in top] == expected[position - 1].topk(3).indices.tolist()
    assert sampler.score_prompt(logits, tokens, top=0).top[1] == ()
