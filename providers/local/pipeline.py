"""The sampling pipeline, written once: which steps run, in which order, skipped when no
row of the batch needs them. `providers.torch` and `providers.jax` each supply the steps
(`SamplingSteps`); `run_pipeline` runs them. For every row of a batch (vLLM's order):

  1. `model_logprobs`     log_softmax of the raw logits — the *model's* distribution,
                          before any step below; what `logprobs`/`top_logprobs` report
                          (as vLLM does);
  2. `apply_logit_bias`   added to the logits (-100 bans a token, +100 forces it);
                          skipped unless a row has a bias;
  3. `apply_penalties`    logit[j] -= count[j] * frequency_penalty
                          + (count[j] > 0) * presence_penalty, counting the tokens this
                          candidate generated so far (not the prompt); skipped unless a row
                          has a penalty and generated tokens;
  4. `apply_temperature`  temperature 0 is greedy: the argmax after steps 2-3
                          (`greedy_tokens`); other rows' logits / temperature; skipped
                          when every row is greedy (so are 5 and 6);
  5. `apply_top_p`        keep the smallest set of tokens whose probability mass reaches
                          top_p; skipped unless a sampling row has top_p < 1;
  6. `sample_tokens`      one draw per sampling row from the softmax, with the row's own
                          seeded generator; greedy rows keep their argmax.

Batch-wide `BatchFlags` decide which optional steps run at all."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar

from providers.local.batch_flags import BatchFlags
from providers.local.runner import RowSampling

Logits = TypeVar("Logits")
Tokens = TypeVar("Tokens")


class SamplingSteps(Protocol[Logits, Tokens]):
    """One framework's steps over a batch of logits [rows, V], rows in batch order."""

    def model_logprobs(self, logits: Logits) -> Logits: ...

    def apply_logit_bias(self, logits: Logits, rows: Sequence[RowSampling]) -> Logits: ...

    def apply_penalties(self, logits: Logits, rows: Sequence[RowSampling]) -> Logits: ...

    def greedy_tokens(self, logits: Logits) -> Tokens: ...

    def apply_temperature(self, logits: Logits, rows: Sequence[RowSampling]) -> Logits: ...

    def apply_top_p(self, logits: Logits, rows: Sequence[RowSampling]) -> Logits: ...

    def sample_tokens(
        self, logits: Logits, greedy: Tokens, rows: Sequence[RowSampling]
    ) -> Tokens: ...


def run_pipeline(
    steps: SamplingSteps[Logits, Tokens],
    logits: Logits,
    rows: Sequence[RowSampling],
    flags: BatchFlags,
) -> tuple[Logits, Tokens]:
    """The steps above, in order, on `logits` → (the model's logprobs, one token per row).
    `flags` are `BatchFlags.of(rows)`."""
    logprobs = steps.model_logprobs(logits)
    if flags.any_bias:
        logits = steps.apply_logit_bias(logits, rows)
    if flags.any_penalties:
        logits = steps.apply_penalties(logits, rows)
    greedy = steps.greedy_tokens(logits)
    if flags.all_greedy:
        return logprobs, greedy
    logits = steps.apply_temperature(logits, rows)
    if flags.any_top_p:
        logits = steps.apply_top_p(logits, rows)
    return logprobs, steps.sample_tokens(logits, greedy, rows)
