"""The JAX sampling pipeline on crafted logits: each step's effect, seeding with PRNG keys,
what logprobs report, and agreement with the torch sampler on the same logits."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
import torch

from providers.jax.sampling import JaxSampler, RowKey, apply_penalties, apply_top_p
from providers.local.runner import RowSampling
from providers.torch.sampling import TorchSampler

VOCAB = 50


@pytest.fixture
def sampler() -> JaxSampler:
    return JaxSampler(jax.devices("cpu")[0])


def random_logits(rows: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((rows, VOCAB)) * 3).astype(np.float32)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    return torch.log_softmax(torch.from_numpy(logits), dim=-1).numpy()


def test_temperature_zero_is_argmax(sampler: JaxSampler) -> None:
    logits = random_logits(7)  # padded to 8 rows inside: the padding must not show
    rows = [RowSampling(temperature=0) for _ in range(7)]
    assert [s.token for s in sampler.sample(logits, rows)] == logits.argmax(-1).tolist()


def test_logit_bias_forces_and_bans(sampler: JaxSampler) -> None:
    logits = random_logits(2)
    best, forced = int(logits[0].argmax()), int(logits[1].argmin())
    rows = [
        RowSampling(temperature=0, logit_bias={best: -100}),
        RowSampling(temperature=1, seed=3, logit_bias={forced: 100}),
    ]
    banned, chosen = sampler.sample(logits, rows)
    assert banned.token == int(np.argsort(-logits[0])[1])
    assert chosen.token == forced
    # The logprob is the model's, not the biased distribution's.
    assert chosen.logprob == pytest.approx(float(log_softmax(logits)[1, forced]), abs=1e-5)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        sampler.sample(logits[:1], [RowSampling(temperature=0, logit_bias={VOCAB: 1})])


def test_penalty_formula_counts_generated_tokens() -> None:
    counts = np.zeros((2, 5), dtype=np.float32)
    counts[0, [1, 3]] = [3, 1]
    penalized = apply_penalties(
        np.zeros((2, 5), np.float32), counts, np.array([0.5, 0.0]), np.array([2.0, 0.0])
    )
    assert np.asarray(penalized).tolist() == [[0, -(3 * 0.5 + 2.0), 0, -(0.5 + 2.0), 0], [0] * 5]


def test_penalties_steer_greedy_choice(sampler: JaxSampler) -> None:
    logits = np.array([[3.0, 2.5, 0.0]], dtype=np.float32)
    row = RowSampling(temperature=0, generated=[0], presence_penalty=1.0)
    assert sampler.sample(logits, [row])[0].token == 1


def test_top_p_keeps_the_smallest_set_reaching_the_mass(sampler: JaxSampler) -> None:
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]] * 2, dtype=np.float32))
    kept = np.isfinite(np.asarray(apply_top_p(logits, np.array([0.8, 0.81], np.float32))))
    assert kept.tolist() == [[True, True, False, False], [True, True, True, False]]
    probs = np.array([0.05, 0.4, 0.02, 0.3, 0.2, 0.03], dtype=np.float32)
    rows = [RowSampling(top_p=0.75, seed=seed) for seed in range(64)]
    drawn = {s.token for s in sampler.sample(np.log(np.tile(probs, (64, 1))), rows)}
    assert drawn == {1, 3, 4}
    greedy = [RowSampling(top_p=0.0, seed=seed) for seed in range(16)]
    logits16 = random_logits(16)
    assert [s.token for s in sampler.sample(logits16, greedy)] == logits16.argmax(-1).tolist()


def test_same_seed_same_samples_different_seeds_differ(sampler: JaxSampler) -> None:
    logits = np.zeros((1, VOCAB), dtype=np.float32)  # uniform: every draw is the key's

    def draws(seed: int) -> list[int]:
        row = RowSampling(seed=seed)
        return [sampler.sample(logits, [row])[0].token for _ in range(20)]

    assert draws(7) == draws(7)
    assert draws(7) != draws(8)
    assert draws(2**40 + 7) != draws(7)  # 64-bit seeds keep their high bits
    unseeded = [RowSampling(), RowSampling()]
    sampler.sample(np.zeros((2, VOCAB), np.float32), unseeded)
    assert unseeded[0].generator.seed != unseeded[1].generator.seed


def test_seed_is_jax_prng_key_of_the_seed() -> None:
    assert RowKey(5).data.tolist() == np.asarray(jax.random.PRNGKey(5)).tolist()
    assert RowKey(2**40 + 7).data.tolist() == [2**8, 7]


def test_rows_draw_independently_of_their_batch(sampler: JaxSampler) -> None:
    logits = np.zeros((3, VOCAB), dtype=np.float32)
    alone = sampler.sample(logits[:1], [RowSampling(seed=5)])[0].token
    batch = [RowSampling(seed=1), RowSampling(seed=5), RowSampling(temperature=0)]
    assert sampler.sample(logits, batch)[1].token == alone


def test_temperature_sharpens_the_distribution(sampler: JaxSampler) -> None:
    logits = np.tile(np.array([2.0, 1.0, 0.0], dtype=np.float32), (128, 1))
    cold = [RowSampling(temperature=0.05, seed=seed) for seed in range(128)]
    hot = [RowSampling(temperature=5.0, seed=seed) for seed in range(128)]
    assert {s.token for s in sampler.sample(logits, cold)} == {0}
    assert {s.token for s in sampler.sample(logits, hot)} == {0, 1, 2}


def test_greedy_tokens_and_logprobs_equal_the_torch_samplers(sampler: JaxSampler) -> None:
    logits = random_logits(5, seed=1)

    def rows() -> list[RowSampling]:
        return [
            RowSampling(temperature=0, top_logprobs=5),
            RowSampling(temperature=0, top_logprobs=3, logit_bias={0: 5, 7: -100}),
            RowSampling(temperature=0, top_logprobs=1, presence_penalty=1, generated=[2, 2]),
            RowSampling(temperature=0, frequency_penalty=0.7, generated=[4, 4, 9]),
            RowSampling(temperature=0, top_logprobs=20),
        ]

    ours = sampler.sample(logits, rows())
    theirs = TorchSampler().sample(torch.from_numpy(logits), rows())
    for mine, reference in zip(ours, theirs, strict=True):
        assert mine.token == reference.token
        assert mine.logprob == pytest.approx(reference.logprob, abs=1e-5)
        assert [t for t, _ in mine.top] == [t for t, _ in reference.top]
        for (_, value), (_, expected) in zip(mine.top, reference.top, strict=True):
            assert value == pytest.approx(expected, abs=1e-5)


def test_score_prompt_equals_the_torch_samplers(sampler: JaxSampler) -> None:
    logits = random_logits(6, seed=2)
    tokens = [4, 9, 0, 31, 7, 7]
    ours = sampler.score_prompt(logits, tokens, top=3)
    theirs = TorchSampler().score_prompt(torch.from_numpy(logits), tokens, top=3)
    assert ours.logprobs[0] is None
    assert ours.top[0] is None
    for position in range(1, len(tokens)):
        mine, reference = ours.logprobs[position], theirs.logprobs[position]
        assert mine is not None
        assert reference is not None
        assert math.isclose(mine, reference, abs_tol=1e-5)
        mine_top, reference_top = ours.top[position], theirs.top[position]
        assert mine_top is not None
        assert reference_top is not None
        assert [t for t, _ in mine_top] == [t for t, _ in reference_top]
    assert sampler.score_prompt(logits, tokens, top=0).top[1] == ()
    assert sampler.score_prompt(logits[:1], tokens[:1], top=2).logprobs == (None,)
