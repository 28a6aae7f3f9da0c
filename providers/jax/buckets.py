"""Shape buckets for the compiled steps: XLA compiles one executable per input shape, so
prompt lengths, decode batch sizes and attention windows are rounded up to powers of two
(capped at the cache's size). A server then compiles a handful of executables in its
first minutes and none after, whatever lengths its requests bring."""

from __future__ import annotations

from dataclasses import dataclass

SMALLEST_PROMPT = 16  # shorter prompts cost the same to pad: the weights dominate
SMALLEST_WINDOW = 64


def power_of_two(size: int) -> int:
    """The smallest power of two >= size (size >= 1)."""
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    return 1 << (size - 1).bit_length()


def bucket(size: int, *, smallest: int, largest: int) -> int:
    """The smallest power of two >= size and >= smallest, capped at largest."""
    if not 1 <= size <= largest:
        raise ValueError(f"size {size} is outside 1..{largest}")
    return min(max(smallest, power_of_two(size)), largest)


@dataclass(frozen=True, slots=True)
class Buckets:
    """The bucket rules of one runner: `max_slots` rows, `max_context` positions."""

    max_slots: int
    max_context: int

    def prompt(self, length: int) -> int:
        """Padded length of a prefill of `length` tokens."""
        return bucket(length, smallest=SMALLEST_PROMPT, largest=self.max_context)

    def batch(self, rows: int) -> int:
        """Padded row count of a decode step over `rows` slots."""
        return bucket(rows, smallest=1, largest=self.max_slots)

    def window(self, positions: int) -> int:
        """Cache positions a step reads (or a slot copy moves) to cover `positions`."""
        return bucket(positions, smallest=SMALLEST_WINDOW, largest=self.max_context)
