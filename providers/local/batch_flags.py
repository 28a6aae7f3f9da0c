"""`BatchFlags`: which optional sampling steps any row of a decode batch needs, so that the
PyTorch and JAX samplers skip the steps no row asks for (vLLM's batch-wide flags)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from providers.local.runner import RowSampling


@dataclass(frozen=True, slots=True)
class BatchFlags:
    """Which optional steps any row of the batch needs."""

    all_greedy: bool
    any_bias: bool
    any_penalties: bool
    any_top_p: bool
    max_top_logprobs: int

    @classmethod
    def of(cls, rows: Sequence[RowSampling]) -> BatchFlags:
        return cls(
            all_greedy=all(row.temperature == 0 for row in rows),
            any_bias=any(row.logit_bias for row in rows),
            any_penalties=any(has_penalty(row) for row in rows),
            any_top_p=any(row.top_p < 1 and row.temperature != 0 for row in rows),
            max_top_logprobs=max((row.top_logprobs for row in rows), default=0),
        )


def has_penalty(row: RowSampling) -> bool:
    """A penalty only bends the logits once the row has generated something."""
    return bool(row.generated) and (row.frequency_penalty != 0 or row.presence_penalty != 0)
