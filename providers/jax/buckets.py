"""Shape buckets for the compiled steps: XLA compiles one executable per input shape, so
chunk lengths, batch sizes, attention windows and block counts are rounded up to a few
sizes (capped at the cache's size), and a runner can compile every step it will ever run
before it serves (`JaxRunner.compile_ahead`).

Decode steps round batch sizes and windows up to powers of two. Prefill passes are three
dimensional (rows x chunk length x window): rows and lengths are powers of two, rows capped
so that rows x length stays within one pass's token budget (`chunk_tokens`, a power of
two), and windows grow by factors of four. Lengths stay powers of two because a lone
prompt's time to first token is linear in its padded length on a CPU (a 100-token prompt
padded to 256 took twice as long as padded to 128); windows cost less (attention is a
small part of a pass). With the defaults (16 slots, 2,048 positions, 256-token chunks)
that is 57 prefill shapes, 30 decode steps, 6 slot copies and 10 prefix-store copies."""

from __future__ import annotations

from dataclasses import dataclass

SMALLEST_CHUNK = 16  # shorter chunks cost the same to pad: the weights dominate
SMALLEST_WINDOW = 64
WIDE = 4  # growth factor of the prefill windows and block-copy buckets


def power_of_two(size: int) -> int:
    """The smallest power of two >= size (size >= 1)."""
    if size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    return 1 << (size - 1).bit_length()


def bucket(size: int, *, smallest: int, largest: int, factor: int = 2) -> int:
    """The smallest `smallest * factor**k` >= size, capped at largest (smallest: a power of
    two; with factor 2 that is the smallest power of two >= size and >= smallest)."""
    if not 1 <= size <= largest:
        raise ValueError(f"size {size} is outside 1..{largest}")
    value = smallest
    while value < size:
        value *= factor
    return min(value, largest)


def every_bucket(*, smallest: int, largest: int, factor: int = 2) -> tuple[int, ...]:
    """Every value `bucket` can return for sizes 1..largest, in increasing order."""
    sizes = [bucket(1, smallest=smallest, largest=largest, factor=factor)]
    while sizes[-1] < largest:
        sizes.append(bucket(sizes[-1] + 1, smallest=smallest, largest=largest, factor=factor))
    return tuple(sizes)


@dataclass(frozen=True, slots=True)
class ChunkShape:
    """One prefill pass's static shape: `rows` chunks padded to `length` tokens, attending
    to their slots' first `window` positions."""

    rows: int
    length: int
    window: int


@dataclass(frozen=True, slots=True)
class Buckets:
    """The bucket rules of one runner: `max_slots` rows, `max_context` positions, prefill
    passes of at most `chunk_tokens` tokens (rounded up to a power of two), prefix-store
    copies of blocks of `block_tokens` positions."""

    max_slots: int
    max_context: int
    chunk_tokens: int = 256
    block_tokens: int = 16

    @property
    def chunk_limit(self) -> int:
        """The longest chunk one pass prefills: a longer one is split."""
        return min(power_of_two(self.chunk_tokens), self.max_context)

    def chunk(self, length: int) -> int:
        """Padded length of a chunk of `length` tokens (at most `chunk_limit`)."""
        return bucket(length, smallest=SMALLEST_CHUNK, largest=self.chunk_limit)

    def chunk_rows(self, length: int) -> int:
        """How many chunks of padded `length` one pass holds."""
        return max(1, min(self.max_slots, self.chunk_limit // length))

    def chunk_batch(self, rows: int, length: int) -> int:
        """Padded row count of a pass of `rows` chunks of padded `length`."""
        return bucket(rows, smallest=1, largest=self.chunk_rows(length))

    def chunk_window(self, positions: int) -> int:
        """Cache positions a prefill pass reads to cover `positions`."""
        return bucket(positions, smallest=SMALLEST_WINDOW, largest=self.max_context, factor=WIDE)

    def chunk_shapes(self) -> tuple[ChunkShape, ...]:
        """Every prefill pass shape: for each chunk length, each row count its pass may
        pad to, each window a chunk of that length can need (its smallest real length
        at start 0 upwards)."""
        shapes: list[ChunkShape] = []
        shortest = 1
        for length in every_bucket(smallest=SMALLEST_CHUNK, largest=self.chunk_limit):
            windows = every_bucket(smallest=SMALLEST_WINDOW, largest=self.max_context, factor=WIDE)
            least = self.chunk_window(shortest)
            for rows in every_bucket(smallest=1, largest=self.chunk_rows(length)):
                shapes += [ChunkShape(rows, length, w) for w in windows if w >= least]
            shortest = length + 1
        return tuple(shapes)

    def batch(self, rows: int) -> int:
        """Padded row count of a decode step over `rows` slots."""
        return bucket(rows, smallest=1, largest=self.max_slots)

    def window(self, positions: int) -> int:
        """Cache positions a decode step reads (or a slot copy moves) to cover `positions`."""
        return bucket(positions, smallest=SMALLEST_WINDOW, largest=self.max_context)

    def batches(self) -> tuple[int, ...]:
        """Every padded decode batch size."""
        return every_bucket(smallest=1, largest=self.max_slots)

    def windows(self) -> tuple[int, ...]:
        """Every decode attention window (and slot-copy length)."""
        return every_bucket(smallest=SMALLEST_WINDOW, largest=self.max_context)

    @property
    def slot_blocks(self) -> int:
        """Most whole store blocks one slot holds."""
        return max(1, self.max_context // self.block_tokens)

    def blocks(self, count: int) -> int:
        """Padded block count of a prefix-store copy of `count` blocks."""
        return bucket(count, smallest=1, largest=self.slot_blocks, factor=WIDE)

    def block_counts(self) -> tuple[int, ...]:
        """Every padded block count."""
        return every_bucket(smallest=1, largest=self.slot_blocks, factor=WIDE)
