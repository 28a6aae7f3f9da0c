"""`run_pipeline`: the steps in their order, and the ones no row needs skipped."""

from __future__ import annotations

from collections.abc import Sequence

from providers.local.batch_flags import BatchFlags
from providers.local.pipeline import run_pipeline
from providers.local.runner import RowSampling


class RecordingSteps:
    """Steps over lists of names: each appends its own name to the logits it is given."""

    def model_logprobs(self, logits: list[str]) -> list[str]:
        return [*logits, "logprobs"]

    def apply_logit_bias(self, logits: list[str], rows: Sequence[RowSampling]) -> list[str]:
        return [*logits, "bias"]

    def apply_penalties(self, logits: list[str], rows: Sequence[RowSampling]) -> list[str]:
        return [*logits, "penalties"]

    def greedy_tokens(self, logits: list[str]) -> list[str]:
        return [*logits, "argmax"]

    def apply_temperature(self, logits: list[str], rows: Sequence[RowSampling]) -> list[str]:
        return [*logits, "temperature"]

    def apply_top_p(self, logits: list[str], rows: Sequence[RowSampling]) -> list[str]:
        return [*logits, "top_p"]

    def sample_tokens(
        self, logits: list[str], greedy: list[str], rows: Sequence[RowSampling]
    ) -> list[str]:
        return [*logits, "sample"]


def run(rows: list[RowSampling]) -> tuple[list[str], list[str]]:
    return run_pipeline(RecordingSteps(), [], rows, BatchFlags.of(rows))


def test_every_step_runs_in_order_when_a_row_needs_it() -> None:
    everything = RowSampling(
        temperature=0.5, top_p=0.5, logit_bias={1: 2.0}, presence_penalty=1.0, generated=[3]
    )
    logprobs, tokens = run([everything, RowSampling(temperature=0)])
    assert logprobs == ["logprobs"]  # from the raw logits, before anything bends them
    assert tokens == ["bias", "penalties", "temperature", "top_p", "sample"]


def test_steps_no_row_needs_are_skipped() -> None:
    assert run([RowSampling(temperature=0, top_p=0.5)]) == (["logprobs"], ["argmax"])
    penalised_too_early = RowSampling(temperature=1, frequency_penalty=1.0)  # nothing generated
    assert run([penalised_too_early]) == (["logprobs"], ["temperature", "sample"])
