"""`JaxRunner`: the engine's `ModelRunner` on the JAX forward pass. It lays prefill chunks
out in batched passes (`providers.jax.chunks`), pads each call up to its shape bucket,
keeps the slots' lengths on the host, and counts forward passes as the torch runner does
(tests prove with them what shares a prefill).

Memory: the slots' KV cache is allocated whole, `max_slots x max_context` positions, when
the runner is built, and the prefix store (`prefix_cache.max_tokens` positions) beside it.
XLA compiles every step for the cache's static shape, so a cache that grew with its
contents would multiply the executables by its capacity buckets; that is not built.

A step that fails (out of device memory, say) may already have consumed the cache or the
store it was donated: the runner then starts over with an empty cache *and an empty
store*, every slot at length 0, and raises `CacheLost`, so that the engine fails every
sequence in flight, not just one, and forgets every prefix it had indexed in the store."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from providers.jax.blocks import empty_store
from providers.jax.buckets import Buckets
from providers.jax.chunks import Pass, plan_passes
from providers.jax.forward import KVCache, empty_cache
from providers.jax.steps import CompiledSteps, int32
from providers.jax.weights import JaxLlama
from providers.local.runner import CacheLost, ForwardCounts, PrefillChunk
from providers.local.settings import PrefixCacheSettings
from providers.local.slots import SlotLimits
from providers.torch.llama_weights import LlamaShape


class JaxRunner:
    """Prefill, batched decode and the prefix store over `max_slots` KV-cache slots (see
    `ModelRunner`).

    Returned logits are float32 host arrays of the real rows only: [1, V] (or
    [len(tokens), V] for every position) per prefill chunk, [len(slots), V] from
    `decode`."""

    def __init__(
        self,
        model: JaxLlama,
        shape: LlamaShape,
        *,
        max_slots: int,
        max_context: int,
        device: jax.Device,
        prefill_chunk_tokens: int = 256,
        prefix_cache: PrefixCacheSettings | None = None,
    ) -> None:
        self.limits = SlotLimits(max_slots, max_context)
        if model.cos.shape[0] != max_context:
            raise ValueError(
                f"rotary tables cover {model.cos.shape[0]} positions, not {max_context}"
            )
        prefix_cache = prefix_cache or PrefixCacheSettings(max_tokens=0)
        self.model = model
        self.shape = shape
        self.device = device
        self.max_slots = max_slots
        self.max_context = max_context
        self.vocab_size = shape.vocab_size
        self.block_tokens = prefix_cache.block_tokens
        self.store_blocks = prefix_cache.max_tokens // prefix_cache.block_tokens
        self.buckets = Buckets(max_slots, max_context, prefill_chunk_tokens, self.block_tokens)
        self.steps = CompiledSteps(shape, model)
        self.counts = ForwardCounts()
        self._cache: KVCache | None = self._empty_cache()
        self._store: KVCache | None = self._empty_store()
        self._lengths = [0] * max_slots

    def compile_ahead(self) -> None:
        """Compile every step a request can need but prompt scoring (see `CompiledSteps`)."""
        self.steps.ahead(self._live_cache(), self._live_store(), self.buckets)

    def prefill(self, slot: int, tokens: Sequence[int], *, every_position: bool = False) -> Any:
        self.limits.prompt(tokens)
        return self.prefill_chunks([PrefillChunk(slot, tokens, 0, every_position)])[0]

    def prefill_chunks(self, chunks: Sequence[PrefillChunk]) -> list[Any]:
        for chunk in chunks:
            self._check(chunk)
        if len({chunk.slot for chunk in chunks}) != len(chunks):
            raise ValueError("prefill chunks need distinct slots")
        # Cut first: a failed step must not leave a length over overwritten positions.
        for chunk in chunks:
            self._lengths[chunk.slot] = chunk.start
        outputs: list[list[np.ndarray]] = [[] for _ in chunks]
        for planned in plan_passes(chunks, self.buckets):
            for piece, logits in zip(planned.pieces, self._run(planned), strict=True):
                if planned.every_position or piece.final:
                    outputs[piece.chunk].append(logits)
                self._lengths[piece.slot] = piece.start + len(piece.tokens)
        return [parts[0] if len(parts) == 1 else np.concatenate(parts) for parts in outputs]

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
            )
        )[:rows]
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
            self._step(lambda cache: (None, copy(cache, int32(source), int32(target))))
        self._lengths[target] = length

    def save_blocks(self, slot: int, blocks: Sequence[tuple[int, int]]) -> None:
        slot = self.limits.slot(slot)
        for index, block_id in blocks:
            self._check_block(block_id)
            if index < 0 or (index + 1) * self.block_tokens > self._lengths[slot]:
                raise ValueError(f"slot {slot} does not hold block {index} whole")
        for group in _groups(list(blocks), self.buckets.slot_blocks):
            self._save_group(slot, group)

    def load_blocks(self, slot: int, block_ids: Sequence[int]) -> None:
        slot = self.limits.slot(slot)
        for block_id in block_ids:
            self._check_block(block_id)
        length = len(block_ids) * self.block_tokens
        if length > self.max_context:
            raise ValueError(f"{length} positions do not fit a slot ({self.max_context})")
        self._lengths[slot] = 0
        if block_ids:
            count = self.buckets.blocks(len(block_ids))
            padded = int32([*block_ids, *[block_ids[-1]] * (count - len(block_ids))])
            load = self.steps.load(self._live_cache(), self._live_store(), count)
            self._run_store(lambda cache, store: (load(cache, store, int32(slot), padded), store))
        self._lengths[slot] = length

    def free(self, slot: int) -> None:
        self._lengths[self.limits.slot(slot)] = 0

    def length(self, slot: int) -> int:
        """How many positions `slot` holds."""
        return self._lengths[self.limits.slot(slot)]

    def _save_group(self, slot: int, group: list[tuple[int, int]]) -> None:
        count = self.buckets.blocks(len(group))
        padded = group + [group[0]] * (count - len(group))
        save = self.steps.save(self._live_cache(), self._live_store(), count)
        indices = int32([index for index, _ in padded])
        ids = int32([block_id for _, block_id in padded])
        self._run_store(lambda cache, store: (cache, save(cache, store, int32(slot), indices, ids)))

    def _check(self, chunk: PrefillChunk) -> None:
        slot = self.limits.slot(chunk.slot)
        end = chunk.start + len(chunk.tokens)
        if not chunk.tokens or not 0 <= chunk.start <= self._lengths[slot]:
            raise ValueError(
                f"a chunk needs tokens and a start within slot {slot}'s "
                f"{self._lengths[slot]} positions, got {len(chunk.tokens)} at {chunk.start}"
            )
        if end > self.max_context:
            raise ValueError(f"prefill needs 1 to {self.max_context} tokens, got {end}")

    def _check_block(self, block_id: int) -> None:
        if not 0 <= block_id < self.store_blocks:
            raise ValueError(f"store block {block_id} out of range 0..{self.store_blocks - 1}")

    def _run(self, planned: Pass) -> list[np.ndarray]:
        """One prefill pass → per piece, its last position's logits [1, V] (every
        position's [len, V] if the pass scores every position)."""
        shape, pieces = planned.shape, planned.pieces
        tokens = np.zeros((shape.rows, shape.length), dtype=np.int32)
        for row, piece in enumerate(pieces):
            tokens[row, : len(piece.tokens)] = piece.tokens
        tokens[len(pieces) :] = tokens[0]  # padding rows repeat row 0
        rows = [*pieces, *[pieces[0]] * (shape.rows - len(pieces))]
        slots = int32([piece.slot for piece in rows])
        starts = int32([piece.start for piece in rows])
        lasts = int32([len(piece.tokens) - 1 for piece in rows])
        step = self.steps.prefill(self._live_cache(), shape, planned.every_position)
        logits = self._step(lambda cache: step(self.model, cache, tokens, slots, starts, lasts))
        self.counts.prefills += 1
        self.counts.prefill_tokens += sum(len(piece.tokens) for piece in pieces)
        if planned.every_position:
            return [logits[row, : len(piece.tokens)] for row, piece in enumerate(pieces)]
        return [logits[row : row + 1] for row in range(len(pieces))]

    def _step(self, call: Callable[[KVCache], tuple[Any, KVCache]]) -> np.ndarray:
        """Run an executable on the cache, keep the cache it returns, and bring its logits
        to the host (waiting for them: a step that fails on the device fails here)."""

        def on_both(cache: KVCache, store: KVCache) -> tuple[Any, KVCache, KVCache]:
            logits, cache = call(cache)
            return logits, cache, store

        return self._guarded(on_both)

    def _run_store(self, call: Callable[[KVCache, KVCache], tuple[KVCache, KVCache]]) -> None:
        """Run a prefix-store copy: it returns the cache and the store, one of them new."""
        self._guarded(lambda cache, store: (None, *call(cache, store)))

    def _guarded(
        self, call: Callable[[KVCache, KVCache], tuple[Any, KVCache, KVCache]]
    ) -> np.ndarray:
        """Run a step on (cache, store) and keep the ones it returns. If it fails, the
        donated cache or store may be gone: start over with both empty (every slot at
        length 0, the store's blocks lost) and raise `CacheLost`."""
        try:
            logits, cache, store = call(self._live_cache(), self._live_store())
            if logits is None:
                for array in (*cache, *store):
                    array.block_until_ready()
                output = np.empty((0, self.vocab_size), dtype=np.float32)
            else:
                output = _host(logits)
            self._cache, self._store = cache, store
        except Exception as exc:
            self._cache = self._store = None  # the old buffers go before new ones are made
            self._lengths = [0] * self.max_slots
            try:
                self._cache, self._store = self._empty_cache(), self._empty_store()
            except Exception as allocation:  # the next step tries again
                raise CacheLost(f"a step failed ({exc}); no new cache: {allocation}") from exc
            raise CacheLost(
                f"a step failed and every slot and the prefix store were emptied: {exc}"
            ) from exc
        return output

    def _live_cache(self) -> KVCache:
        if self._cache is None:
            self._cache = self._empty_cache()
        return self._cache

    def _live_store(self) -> KVCache:
        if self._store is None:
            self._store = self._empty_store()
        return self._store

    def _empty_cache(self) -> KVCache:
        return empty_cache(
            self.shape,
            slots=self.max_slots,
            context=self.max_context,
            dtype=self.model.embed.dtype,
            device=self.device,
        )

    def _empty_store(self) -> KVCache:
        return empty_store(
            self.shape,
            blocks=self.store_blocks,
            block_tokens=self.block_tokens,
            dtype=self.model.embed.dtype,
            device=self.device,
        )


def _groups(items: list[tuple[int, int]], size: int) -> list[list[tuple[int, int]]]:
    return [items[start : start + size] for start in range(0, len(items), size)]


def _host(logits: jax.Array) -> np.ndarray:
    """The logits on the host. Cutting the device array to the real rows instead would
    compile a slice for every new count (every new prompt length); a host view is free on
    the CPU and costs one copy of the step's logits from a GPU."""
    return np.asarray(logits)
