"""The KV-cache slot rules every `ModelRunner` enforces, written once so that the PyTorch
and JAX runners refuse the same calls with the same messages: how long a slot is (the
`max_context` rule), which slot numbers exist, what a prefill and a decode step may ask."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_MAX_SLOTS = 16
DEFAULT_MAX_CONTEXT = 2048  # cap on the model's window: the cache is preallocated


def context_limit(requested: int | None, window: int) -> int:
    """Positions per slot: `requested`, or the model's `window` capped at
    `DEFAULT_MAX_CONTEXT`; ValueError if `requested` is outside 1..window."""
    limit = requested or min(window, DEFAULT_MAX_CONTEXT)
    if not 1 <= limit <= window:
        raise ValueError(
            f"max_context must be between 1 and the model's context window {window}, got {limit}"
        )
    return limit


@dataclass(frozen=True, slots=True)
class SlotLimits:
    """`max_slots` slots of `max_context` positions each."""

    max_slots: int
    max_context: int

    def __post_init__(self) -> None:
        if self.max_slots < 1:
            raise ValueError(f"max_slots must be at least 1, got {self.max_slots}")
        if self.max_context < 1:
            raise ValueError(f"max_context must be at least 1, got {self.max_context}")

    def slot(self, slot: int) -> int:
        """`slot`, or ValueError if there is no such slot."""
        if not 0 <= slot < self.max_slots:
            raise ValueError(f"slot {slot} out of range 0..{self.max_slots - 1}")
        return slot

    def prompt(self, tokens: Sequence[int]) -> int:
        """How many tokens a prefill writes, or ValueError if they do not fit a slot."""
        count = len(tokens)
        if not 1 <= count <= self.max_context:
            raise ValueError(f"prefill needs 1 to {self.max_context} tokens, got {count}")
        return count

    def batch(self, slots: Sequence[int], tokens: Sequence[int]) -> list[int]:
        """A decode step's slots, checked: one token each, distinct, at least one."""
        batch = [self.slot(slot) for slot in slots]
        if not batch or len(batch) != len(tokens) or len(set(batch)) != len(batch):
            raise ValueError("decode needs one token per slot and distinct, non-empty slots")
        return batch

    def room(self, lengths: Sequence[int]) -> None:
        """ValueError unless every slot of a decode step has a free position left."""
        if max(lengths) >= self.max_context:
            raise ValueError(f"a slot is full ({self.max_context} positions)")
