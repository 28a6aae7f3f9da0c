"""What the continuous-batching engine needs from a framework: a model that runs prefill
and batched decode steps over per-slot KV caches, and a sampler that turns logits into
tokens. `providers.torch` and `providers.jax` implement both.

Slots: the runner owns `max_slots` KV-cache slots of `max_context` positions each. A
sequence occupies one slot from prefill until `free`. Candidates of one request (n, best_of)
share one prefill: the engine prefills one slot and `copy_slot`s it to the others.

A `Sampler` runs the sampling pipeline of `providers.local.pipeline` on each batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class RowSampling:
    """Per-row sampling settings and state, owned by the engine, read by the sampler."""

    temperature: float = 1.0
    top_p: float = 1.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None
    top_logprobs: int = 0  # how many alternatives to report per position (0: none)
    generated: list[int] = field(default_factory=list)  # tokens generated so far
    generator: Any = None  # the framework's RNG state for this row, created by the sampler


@dataclass(frozen=True, slots=True)
class Sampled:
    """One row's outcome: the token, its logprob under the model's distribution, and the
    `top_logprobs` most likely alternatives as (token id, logprob), best first."""

    token: int
    logprob: float
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True, slots=True)
class PromptScores:
    """Logprobs of a prompt's own tokens (for `echo` with `logprobs`): entry i scores
    token i given tokens < i; entry 0 is None (nothing precedes the first token)."""

    logprobs: tuple[float | None, ...]
    top: tuple[tuple[tuple[int, float], ...] | None, ...]


@dataclass(slots=True)
class ForwardCounts:
    """Forward passes a runner has run so far: calls, and tokens they processed (tests read
    them to prove what shares a prefill)."""

    prefills: int = 0
    decodes: int = 0
    prefill_tokens: int = 0
    decode_tokens: int = 0


@dataclass(frozen=True, slots=True)
class PrefillChunk:
    """Part of one slot's prompt: `tokens` go at positions `start`.. of `slot`, whose cache
    already holds positions 0..start-1 (a prefix loaded from the prefix store, earlier
    chunks of the same prompt). `start` 0 replaces whatever the slot held."""

    slot: int
    tokens: Sequence[int]
    start: int = 0
    every_position: bool = False  # logits of every position of the chunk, not its last


class CacheLost(RuntimeError):
    """A failed step took every slot's KV cache with it (a JAX step donates its cache):
    the runner has emptied every slot, so every sequence in flight must fail."""


class ModelRunner(Protocol):
    max_slots: int
    max_context: int
    vocab_size: int

    def prefill(self, slot: int, tokens: Sequence[int], *, every_position: bool = False) -> Any:
        """Fill `slot`'s cache with `tokens`; return the last position's logits [1, V], or
        every position's [L, V] if `every_position` (only prompt scoring needs them)."""
        ...

    def prefill_chunks(self, chunks: Sequence[PrefillChunk]) -> list[Any]:
        """Extend each chunk's slot with its tokens, in one batched forward pass where the
        runner can (distinct slots); per chunk, its last position's logits [1, V], or every
        position's [len(tokens), V] if `every_position`."""
        ...

    def decode(self, slots: Sequence[int], tokens: Sequence[int]) -> Any:
        """Append one token to each slot; return next-token logits [len(slots), V]."""
        ...

    # The prefix store: `store_blocks` blocks of `block_tokens` positions (every layer's
    # keys and values), apart from the slots; `providers.local.prefix_cache` indexes them.
    block_tokens: int
    store_blocks: int  # 0: no prefix cache

    def save_blocks(self, slot: int, blocks: Sequence[tuple[int, int]]) -> None:
        """Copy, for each (i, block id), `slot`'s positions i*block_tokens.. of one block
        into that store block."""
        ...

    def load_blocks(self, slot: int, block_ids: Sequence[int]) -> None:
        """Make `slot` hold the store blocks' positions in order: its length becomes
        len(block_ids) * block_tokens."""
        ...

    def copy_slot(self, source: int, target: int) -> None:
        """Make `target`'s cache a copy of `source`'s (same length)."""
        ...

    def free(self, slot: int) -> None: ...


class Sampler(Protocol):
    def new_generator(self, seed: int | None) -> Any:
        """A per-row RNG; seeded rows reproduce exactly."""
        ...

    def sample(self, logits: Any, rows: Sequence[RowSampling]) -> list[Sampled]:
        """Run the sampling pipeline on logits [len(rows), V]; one `Sampled` per row."""
        ...

    def score_prompt(self, logits: Any, tokens: Sequence[int], top: int) -> PromptScores:
        """Logprobs of `tokens` under prefill logits [L, V] (position i-1 scores token i)."""
        ...
