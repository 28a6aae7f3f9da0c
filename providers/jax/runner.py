"""`JaxRunner`: the engine's `ModelRunner` on the JAX forward pass. It pads each call up to
its shape bucket, keeps the slots' lengths on the host, and counts forward passes as the
torch runner does (tests prove with them what shares a prefill).

A step that fails (out of device memory, say) may already have consumed the cache it was
donated: the runner then starts over with an empty cache, every slot at length 0, and
raises `CacheLost` so that the engine fails every sequence in flight, not just one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from providers.jax.buckets import Buckets
from providers.jax.forward import KVCache, empty_cache
from providers.jax.steps import CompiledSteps, int32
from providers.jax.weights import JaxLlama
from providers.local.runner import CacheLost, ForwardCounts
from providers.local.slots import SlotLimits
from providers.torch.llama_weights import LlamaShape


class JaxRunner:
    """Prefill and batched decode over `max_slots` KV-cache slots (see `ModelRunner`).

    Returned logits are float32 host arrays of the real rows only: [1, V] (or
    [len(tokens), V] for every position) from `prefill`, [len(slots), V] from `decode`."""

    def __init__(
        self,
        model: JaxLlama,
        shape: LlamaShape,
        *,
        max_slots: int,
        max_context: int,
        device: jax.Device,
    ) -> None:
        self.limits = SlotLimits(max_slots, max_context)
        if model.cos.shape[0] != max_context:
            raise ValueError(
                f"rotary tables cover {model.cos.shape[0]} positions, not {max_context}"
            )
        self.model = model
        self.shape = shape
        self.device = device
        self.max_slots = max_slots
        self.max_context = max_context
        self.vocab_size = shape.vocab_size
        self.buckets = Buckets(max_slots, max_context)
        self.steps = CompiledSteps(shape, model)
        self.counts = ForwardCounts()
        self._cache: KVCache | None = self._empty_cache()
        self._lengths = [0] * max_slots

    def compile_ahead(self) -> None:
        """Compile every step a request can need but prompt scoring (see `CompiledSteps`)."""
        self.steps.ahead(self._live_cache(), self.buckets)

    def prefill(self, slot: int, tokens: Sequence[int], *, every_position: bool = False) -> Any:
        slot = self.limits.slot(slot)
        count = self.limits.prompt(tokens)
        padded = np.zeros(self.buckets.prompt(count), dtype=np.int32)
        padded[:count] = tokens
        # Emptied first: a failed step must not leave a length over overwritten positions.
        self._lengths[slot] = 0
        step = self.steps.prefill(self._live_cache(), len(padded), every_position)
        logits = self._step(
            lambda cache: step(self.model, cache, padded, int32(slot), int32(count - 1)),
            rows=count if every_position else 1,
        )
        self._lengths[slot] = count
        self.counts.prefills += 1
        self.counts.prefill_tokens += count
        return logits

    def decode(self, slots: Sequence[int], tokens: Sequence[int]) -> Any:
        batch = self.limits.batch(slots, tokens)
        positions = [self._lengths[slot] for slot in batch]
        self.limits.room(positions)
        rows = len(batch)
        padding = self.buckets.batch(rows) - rows
        window = self.buckets.window(max(positions) + 1)
        # Padding rows repeat row 0: they rewrite its cache entry with the same values.
        step = self.steps.decode(self._live_cache(), rows + padding, window)
        logits = self._step(
            lambda cache: step(
                self.model,
                cache,
                int32([*tokens, *[tokens[0]] * padding]),
                int32([*batch, *[batch[0]] * padding]),
                int32([*positions, *[positions[0]] * padding]),
            ),
            rows=rows,
        )
        for slot, position in zip(batch, positions, strict=True):
            self._lengths[slot] = position + 1
        self.counts.decodes += 1
        self.counts.decode_tokens += rows
        return logits

    def copy_slot(self, source: int, target: int) -> None:
        source, target = self.limits.slot(source), self.limits.slot(target)
        length = self._lengths[source]
        if source != target and length:
            window = self.buckets.window(length)
            copy = self.steps.copy(self._live_cache(), window)
            self._step(lambda cache: (None, copy(cache, int32(source), int32(target))), rows=0)
        self._lengths[target] = length

    def free(self, slot: int) -> None:
        self._lengths[self.limits.slot(slot)] = 0

    def length(self, slot: int) -> int:
        """How many positions `slot` holds."""
        return self._lengths[self.limits.slot(slot)]

    def _step(self, call: Callable[[KVCache], tuple[Any, KVCache]], rows: int) -> np.ndarray:
        """Run an executable on the cache, keep the cache it returns, and bring its first
        `rows` rows of logits to the host (waiting for them: a step that fails on the
        device fails here). If it fails, the donated cache may be gone: start over empty
        and raise `CacheLost`."""
        try:
            logits, cache = call(self._live_cache())
            output = _rows(logits, rows) if rows else np.empty((0, self.vocab_size))
            self._cache = cache
        except Exception as exc:
            self._cache = None  # the old buffers go before new ones are allocated
            self._lengths = [0] * self.max_slots
            try:
                self._cache = self._empty_cache()
            except Exception as allocation:  # the next step tries again
                raise CacheLost(f"a step failed ({exc}); no new cache: {allocation}") from exc
            raise CacheLost(f"a step failed and every slot was emptied: {exc}") from exc
        return output

    def _live_cache(self) -> KVCache:
        if self._cache is None:
            self._cache = self._empty_cache()
        return self._cache

    def _empty_cache(self) -> KVCache:
        return empty_cache(
            self.shape,
            slots=self.max_slots,
            context=self.max_context,
            dtype=self.model.embed.dtype,
            device=self.device,
        )


def _rows(logits: jax.Array, count: int) -> np.ndarray:
    """The first `count` rows, on the host. Cutting the device array instead would compile
    a slice for every new count (every new prompt length); a host view is free on the CPU
    and costs one copy of the step's logits from a GPU."""
    return np.asarray(logits)[:count]
