"""`CompiledSteps`: the forward pass's prefill, decode, slot-copy and prefix-store steps
compiled ahead of time, one executable per shape bucket, each timed, so that compile time
is known apart from run time (the benchmark reports both). `ahead` compiles every bucket a
runner can meet before it serves; a step asked for later compiles on first use (only the
prefills that score a prompt, which `ahead` leaves out).

Every executable donates the state it writes (the KV cache, or the prefix store for a
save): XLA updates it in place instead of copying hundreds of megabytes per token. A
donated buffer is dead after the call; the caller keeps the returned one."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import structlog

from providers.jax import blocks, forward
from providers.jax.buckets import Buckets, ChunkShape
from providers.jax.forward import KVCache
from providers.jax.weights import JaxLlama
from providers.torch.llama_weights import LlamaShape

log = structlog.get_logger("turnout.providers.jax")

Executable = Callable[..., Any]
StepKey = tuple[str | int | bool, ...]  # the step's name, then its static dimensions


@dataclass(slots=True)
class CompileStats:
    """Executables compiled so far and the seconds spent compiling them."""

    count: int = 0
    seconds: float = 0.0


class CompiledSteps:
    """One runner's executables, keyed by step and bucket; `stats` counts their compiles."""

    def __init__(self, shape: LlamaShape, model: JaxLlama) -> None:
        self.shape = shape
        self.model = model
        self.stats = CompileStats()
        self._compiled: dict[StepKey, Executable] = {}

    @property
    def compiled(self) -> frozenset[StepKey]:
        """The keys of the executables compiled so far."""
        return frozenset(self._compiled)

    def ahead(self, cache: KVCache, store: KVCache, buckets: Buckets) -> None:
        """Compile, now, every step a request can need except prompt scoring: each prefill
        pass shape, the decode step of each batch x window bucket, the slot copy of each
        window, and (with a prefix store) its saves and loads of each block count. Logs
        the count first, a line per executable, and the total time."""
        work = [partial(self.prefill, cache, chunk) for chunk in buckets.chunk_shapes()]
        work += [
            partial(self.decode, cache, batch, window)
            for batch in buckets.batches()
            for window in buckets.windows()
        ]
        work += [partial(self.copy, cache, window) for window in buckets.windows()]
        if store.keys.shape[1]:
            for count in buckets.block_counts():
                work += [partial(self.save, cache, store, count)]
                work += [partial(self.load, cache, store, count)]
        before, started = self.stats.count, time.perf_counter()
        log.info("jax_compile_ahead_started", executables=len(work))
        for compile_step in work:
            compile_step()
        log.info(
            "jax_compile_ahead_done",
            executables=self.stats.count - before,
            seconds=round(time.perf_counter() - started, 2),
        )

    def prefill(
        self, cache: KVCache, chunk: ChunkShape, every_position: bool = False
    ) -> Executable:
        """(model, cache, tokens [rows, length], slots, starts, lasts [rows] int32) →
        (logits, cache): of each row's position `lasts` [rows, V], or of every position
        [rows, length, V] if `every_position`."""
        return self._get(
            ("prefill", chunk.rows, chunk.length, chunk.window, every_position),
            partial(forward.prefill_chunks, self.shape, chunk.window, every_position),
            cache,
            _ints(chunk.rows, chunk.length),
            _ints(chunk.rows),
            _ints(chunk.rows),
            _ints(chunk.rows),
        )

    def decode(self, cache: KVCache, batch: int, window: int) -> Executable:
        """(model, cache, tokens, slots, positions [batch] int32) → (logits [batch, V], cache)."""
        return self._get(
            ("decode", batch, window),
            partial(forward.decode, self.shape, window),
            cache,
            _ints(batch),
            _ints(batch),
            _ints(batch),
        )

    def copy(self, cache: KVCache, length: int) -> Executable:
        """(cache, source int32, target int32) → cache; the model is not an argument."""
        copy = partial(forward.copy_prefix, length=length)
        return self._jit(("copy", length), copy, (0,), cache, _ints(), _ints())

    def save(self, cache: KVCache, store: KVCache, count: int) -> Executable:
        """(cache, store, slot int32, indices [count], block ids [count]) → store."""
        save = blocks.save_blocks
        return self._jit(("save", count), save, (1,), cache, store, _ints(), *[_ints(count)] * 2)

    def load(self, cache: KVCache, store: KVCache, count: int) -> Executable:
        """(cache, store, slot int32, block ids [count]) → cache."""
        load = blocks.load_blocks
        return self._jit(("load", count), load, (0,), cache, store, _ints(), _ints(count))

    def _jit(
        self, key: StepKey, function: Callable[..., Any], donate: tuple[int, ...], *args: Any
    ) -> Executable:
        if key not in self._compiled:
            step = jax.jit(function, donate_argnums=donate)
            self._compiled[key] = self._timed(key, partial(step.lower, *args))
        return self._compiled[key]

    def _get(
        self, key: StepKey, function: Callable[..., Any], cache: KVCache, *args: Any
    ) -> Executable:
        return self._jit(key, function, (1,), self.model, cache, *args)

    def _timed(self, key: StepKey, lower: Callable[[], Any]) -> Executable:
        started = time.perf_counter()
        executable: Executable = lower().compile()
        seconds = time.perf_counter() - started
        self.stats.count += 1
        self.stats.seconds += seconds
        log.info(
            "jax_step_compiled",
            step=key[0],
            shape=key[1:],
            seconds=round(seconds, 2),
            compiled=self.stats.count,
        )
        return executable


def _ints(*dims: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(dims, jnp.int32)  # type: ignore[no-untyped-call]


def int32(values: Any) -> np.ndarray:
    """Host int32 array for an executable's integer arguments."""
    return np.asarray(values, dtype=np.int32)
