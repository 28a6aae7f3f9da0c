"""The slot rules both runners enforce: the `max_context` rule and the checks of a call."""

from __future__ import annotations

import pytest

from providers.local.slots import DEFAULT_MAX_CONTEXT, SlotLimits, context_limit


def test_max_context_defaults_to_the_window_capped() -> None:
    assert context_limit(None, 8192) == DEFAULT_MAX_CONTEXT == 2048
    assert context_limit(None, 512) == 512
    assert context_limit(300, 512) == 300
    with pytest.raises(ValueError, match="between 1 and the model's context window 512, got 600"):
        context_limit(600, 512)


def test_calls_outside_the_slots_are_refused() -> None:
    limits = SlotLimits(max_slots=2, max_context=4)
    assert limits.slot(1) == 1
    with pytest.raises(ValueError, match=r"slot 2 out of range 0\.\.1"):
        limits.slot(2)
    assert limits.prompt([7, 7, 7, 7]) == 4
    with pytest.raises(ValueError, match="prefill needs 1 to 4 tokens, got 0"):
        limits.prompt([])
    assert limits.batch([1, 0], [5, 6]) == [1, 0]
    for slots, tokens in (([], []), ([0, 0], [1, 2]), ([0], [1, 2])):
        with pytest.raises(ValueError, match="one token per slot and distinct"):
            limits.batch(slots, tokens)
    limits.room([3, 0])
    with pytest.raises(ValueError, match=r"a slot is full \(4 positions\)"):
        limits.room([4, 0])
    with pytest.raises(ValueError, match="max_slots must be at least 1"):
        SlotLimits(max_slots=0, max_context=4)
