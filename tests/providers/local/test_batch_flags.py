"""Batch-wide flags: which optional sampling steps a decode batch needs."""

from __future__ import annotations

from providers.local.batch_flags import BatchFlags
from providers.local.runner import RowSampling


def test_batch_flags() -> None:
    flags = BatchFlags.of([RowSampling(temperature=0), RowSampling(temperature=0, top_p=0.5)])
    assert flags.all_greedy
    assert not (flags.any_bias)
    assert not (flags.any_penalties)
    assert not (flags.any_top_p)
    flags = BatchFlags.of(
        [RowSampling(top_p=0.9, top_logprobs=2), RowSampling(frequency_penalty=1, generated=[1])]
    )
    assert not flags.all_greedy
    assert flags.any_top_p
    assert flags.any_penalties
    assert flags.max_top_logprobs == 2
