"""`CompiledSteps`: the forward pass's prefill, decode and slot-copy steps compiled ahead
of time, one executable per shape bucket, each timed, so that compile time is known apart
from run time (the benchmark reports both). `ahead` compiles every bucket a runner can
meet before it serves; a step asked for later compiles on first use (only the prefills
that score a prompt, which `ahead` leaves out).

Every executable donates the KV cache it is given: XLA updates it in place instead of
copying a cache of hundreds of megabytes per token. A donated cache is dead after the
call; the caller keeps the returned one."""

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

from providers.jax import forward
from providers.jax.buckets import Buckets
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

    def ahead(self, cache: KVCache, buckets: Buckets) -> None:
        """Compile, now, every step a request can need except prompt scoring: the prefill of
        each prompt bucket, the decode step of each batch x window bucket, the slot copy of
        each window. Logs the count first, a line per executable, and the total time."""
        work = [partial(self.prefill, cache, length) for length in buckets.prompts()]
        work += [
            partial(self.decode, cache, batch, window)
            for batch in buckets.batches()
            for window in buckets.windows()
        ]
        work += [partial(self.copy, cache, window) for window in buckets.windows()]
        before, started = self.stats.count, time.perf_counter()
        log.info("jax_compile_ahead_started", executables=len(work))
        for compile_step in work:
            compile_step()
        log.info(
            "jax_compile_ahead_done",
            executables=self.stats.count - before,
            seconds=round(time.perf_counter() - started, 2),
        )

    def prefill(self, cache: KVCache, length: int, every_position: bool = False) -> Executable:
        """(model, cache, tokens [length], slot, last int32) → (logits, cache): logits of
        position `last` [1, V], or of every position [length, V] if `every_position`."""
        return self._get(
            ("prefill", length, every_position),
            partial(forward.prefill, self.shape, every_position),
            cache,
            _ints(length),
            _ints(),
            _ints(),
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
        key: StepKey = ("copy", length)
        if key not in self._compiled:
            step = jax.jit(partial(forward.copy_prefix, length=length), donate_argnums=(0,))
            self._compiled[key] = self._timed(key, lambda: step.lower(cache, _ints(), _ints()))
        return self._compiled[key]

    def _get(
        self, key: StepKey, function: Callable[..., Any], cache: KVCache, *args: Any
    ) -> Executable:
        if key not in self._compiled:
            step = jax.jit(function, donate_argnums=(1,))
            lowered = partial(step.lower, self.model, cache, *args)
            self._compiled[key] = self._timed(key, lowered)
        return self._compiled[key]

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
