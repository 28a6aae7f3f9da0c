"""Shape buckets for the compiled steps: XLA compiles one executable per input shape, so
prompt lengths, decode batch sizes and attention windows are rounded up to powers of two
(capped at the cache's size). The buckets are few — with the defaults (16 slots, 2,048
positions): 8 prompt lengths, 5 batch sizes, 6 windows — so a runner can compile every
step it will ever run before it serves (`JaxRunner.compile_ahead`)."""

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


def every_bucket(*, smallest: int, largest: int) -> tuple[int, ...]:
    """Every value `bucket` can return for sizes 1..largest, in increasing order."""
    sizes = {bucket(1, smallest=smallest, largest=largest)}
    while (top := max(sizes)) < largest:
        sizes.add(bucket(top + 1, smallest=smallest, largest=largest))
    return tuple(sorted(sizes))


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

    def prompts(self) -> tuple[int, ...]:
        """Every padded prefill length."""
        return every_bucket(smallest=SMALLEST_PROMPT, largest=self.max_context)

    def batches(self) -> tuple[int, ...]:
        """Every padded decode batch size."""
        return every_bucket(smallest=1, largest=self.max_slots)

    def windows(self) -> tuple[int, ...]:
        """Every attention window (and slot-copy length)."""
        return every_bucket(smallest=SMALLEST_WINDOW, largest=self.max_context)
