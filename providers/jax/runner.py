"""`JaxRunner`: the engine's `ModelRunner` on the JAX forward pass. It pads each call up to
its shape bucket, keeps the slots' lengths on the host, and counts forward passes as the
torch runner does (tests prove with them what shares a prefill)."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

from providers.jax.buckets import Buckets
from providers.jax.forward import KVCache, empty_cache
from providers.jax.steps import CompiledSteps, int32
from providers.jax.weights import JaxLlama
from providers.local.runner import ForwardCounts
from providers.torch.llama_weights import LlamaShape


class JaxRunner:
    """Prefill and batched decode over `max_slots` KV-cache slots (see `ModelRunner`).

    Returned logits are float32 host arrays of the real rows only: [len(tokens), V] from
    `prefill`, [len(slots), V] from `decode` (see `_rows`)."""

    def __init__(
        self,
        model: JaxLlama,
        shape: LlamaShape,
        *,
        max_slots: int,
        max_context: int,
        device: jax.Device,
    ) -> None:
        if max_slots < 1:
            raise ValueError(f"max_slots must be at least 1, got {max_slots}")
        if model.cos.shape[0] != max_context:
            raise ValueError(
                f"rotary tables cover {model.cos.shape[0]} positions, not {max_context}"
            )
        self.model = model
        self.max_slots = max_slots
        self.max_context = max_context
        self.vocab_size = shape.vocab_size
        self.buckets = Buckets(max_slots, max_context)
        self.steps = CompiledSteps(shape, model)
        self.counts = ForwardCounts()
        self._cache: KVCache = empty_cache(
            shape, slots=max_slots, context=max_context, dtype=model.embed.dtype, device=device
        )
        self._lengths = [0] * max_slots

    def prefill(self, slot: int, tokens: Sequence[int]) -> np.ndarray:
        slot = self._checked_slot(slot)
        count = len(tokens)
        if not 1 <= count <= self.max_context:
            raise ValueError(f"prefill needs 1 to {self.max_context} tokens, got {count}")
        padded = np.zeros(self.buckets.prompt(count), dtype=np.int32)
        padded[:count] = tokens
        # Emptied first: a failed step must not leave a length over overwritten positions.
        self._lengths[slot] = 0
        step = self.steps.prefill(self._cache, len(padded))
        logits, self._cache = step(self.model, self._cache, padded, int32(slot))
        self._lengths[slot] = count
        self.counts.prefills += 1
        self.counts.prefill_tokens += count
        return _rows(logits, count)

    def decode(self, slots: Sequence[int], tokens: Sequence[int]) -> np.ndarray:
        batch = [self._checked_slot(slot) for slot in slots]
        if not batch or len(batch) != len(tokens) or len(set(batch)) != len(batch):
            raise ValueError("decode needs one token per slot and distinct, non-empty slots")
        positions = [self._lengths[slot] for slot in batch]
        if max(positions) >= self.max_context:
            raise ValueError(f"a slot is full ({self.max_context} positions)")
        rows = len(batch)
        padding = self.buckets.batch(rows) - rows
        # Padding rows repeat row 0: they rewrite its cache entry with the same values.
        step = self.steps.decode(
            self._cache, rows + padding, self.buckets.window(max(positions) + 1)
        )
        logits, self._cache = step(
            self.model,
            self._cache,
            int32([*tokens, *[tokens[0]] * padding]),
            int32([*batch, *[batch[0]] * padding]),
            int32([*positions, *[positions[0]] * padding]),
        )
        for slot, position in zip(batch, positions, strict=True):
            self._lengths[slot] = position + 1
        self.counts.decodes += 1
        self.counts.decode_tokens += rows
        return _rows(logits, rows)

    def copy_slot(self, source: int, target: int) -> None:
        source, target = self._checked_slot(source), self._checked_slot(target)
        length = self._lengths[source]
        if source != target and length:
            step = self.steps.copy(self._cache, self.buckets.window(length))
            self._cache = step(self._cache, int32(source), int32(target))
        self._lengths[target] = length

    def free(self, slot: int) -> None:
        self._lengths[self._checked_slot(slot)] = 0

    def length(self, slot: int) -> int:
        """How many positions `slot` holds."""
        return self._lengths[self._checked_slot(slot)]

    def _checked_slot(self, slot: int) -> int:
        if not 0 <= slot < self.max_slots:
            raise ValueError(f"slot {slot} out of range 0..{self.max_slots - 1}")
        return slot


def _rows(logits: jax.Array, count: int) -> np.ndarray:
    """The first `count` rows, on the host. Cutting the device array instead would compile
    a slice for every new count (every new prompt length); a host view is free on the CPU
    and costs one copy of the step's logits from a GPU."""
    return np.asarray(logits)[:count]
