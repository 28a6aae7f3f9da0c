"""`plan_chunks`: a step's prefill chunks, oldest prompt first, within a budget of the
chunks' own tokens (streams decoding beside them) or of a padded pass's rows x its longest
chunk (the engine's cold budget, no stream decoding)."""

from __future__ import annotations

from providers.local.job import Job
from providers.local.prefilling import PromptPrefill, plan_chunks
from providers.local.runner import RowSampling


def waiting(*lengths: int) -> list[PromptPrefill]:
    return [
        PromptPrefill(Job(list(range(length)), [RowSampling()], [], 1), [slot])
        for slot, length in enumerate(lengths)
    ]


def sizes(planned: list[tuple[PromptPrefill, object]]) -> list[int]:
    return [len(chunk.tokens) for _, chunk in planned]  # type: ignore[attr-defined]


def test_the_token_budget_counts_each_chunks_own_tokens() -> None:
    assert sizes(plan_chunks(waiting(40, 40, 40), 100)) == [40, 40, 20]
    assert sizes(plan_chunks(waiting(300, 10), 256)) == [256]


def test_the_padded_budget_counts_rows_times_the_longest_chunk() -> None:
    # Sixteen ~40-token prompts: 16 x 45 = 720 padded tokens fit a budget of 1,024 ...
    burst = waiting(*[40, 45, 38, 41] * 4)
    assert sizes(plan_chunks(burst, 1024, padded=True)) == [40, 45, 38, 41] * 4
    # ... at 512, rows x 45 stops at eleven rows, where the chunks' own tokens (164 per
    # four prompts) would take twelve whole and cut a thirteenth:
    assert sizes(plan_chunks(burst, 512, padded=True)) == [40, 45, 38, 41] * 2 + [40, 45, 38]
    assert len(plan_chunks(burst, 512)) == 13  # (12 whole, one cut) by tokens alone


def test_a_long_first_prompt_is_cut_to_the_budget_and_alone() -> None:
    assert sizes(plan_chunks(waiting(1400, 40), 1024, padded=True)) == [1024]
    # A long prompt behind a short one is cut to the width that keeps two rows in budget.
    assert sizes(plan_chunks(waiting(40, 1400, 40), 1024, padded=True)) == [40, 512]
