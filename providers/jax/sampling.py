"""`JaxSampler`: the sampling pipeline of `providers.local.pipeline` in JAX, with per-row
PRNG keys: the steps are this module's jitted functions of the same names (plus
`greedy_tokens`), adapted by `JaxSteps` and run by `run_pipeline`.

A batch's rows are padded up to a power of two, and a prompt's scored positions as a
prefill's prompt is (a power of two from 16), so that each jitted function compiles for a
few shapes only;
`compile_ahead` compiles those of every decode batch size before the model serves.
Per-row settings are built on the host (numpy) and enter the steps as arrays."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import structlog
from numpy.typing import ArrayLike

from providers.jax.buckets import SMALLEST_CHUNK, power_of_two
from providers.local.batch_flags import BatchFlags, has_penalty
from providers.local.pipeline import run_pipeline
from providers.local.runner import PromptScores, RowSampling, Sampled

log = structlog.get_logger("turnout.providers.jax")

SEED_SPACE = 2**64
_WORD = 0xFFFFFFFF
# top_logprobs are computed for a bucket of k, then cut per row; the smallest bucket holds
# OpenAI's largest `top_logprobs` (20), so one executable per row count serves them all.
SMALLEST_TOP = 32

TopList = tuple[tuple[int, float], ...]


class RowKey:
    """A row's generator: a threefry key (raw uint32 [2]) that each draw splits.

    Seeded as `jax.random.PRNGKey(seed)` is with 64-bit integers enabled: high word, low
    word. (With JAX's default 32-bit integers, PRNGKey drops a seed's high bits.)"""

    __slots__ = ("data", "seed")

    def __init__(self, seed: int) -> None:
        self.seed = seed % SEED_SPACE
        self.data = np.array([self.seed >> 32, self.seed & _WORD], dtype=np.uint32)


class JaxSampler:
    """Turns logits into tokens on `device` (None: JAX's default device)."""

    def __init__(self, device: jax.Device | None = None) -> None:
        self.device = device

    def new_generator(self, seed: int | None) -> RowKey:
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        return RowKey(seed)

    def sample(self, logits: ArrayLike, rows: Sequence[RowSampling]) -> list[Sampled]:
        host = np.asarray(logits, dtype=np.float32)
        if host.shape[0] != len(rows):
            raise ValueError(f"{host.shape[0]} rows of logits for {len(rows)} rows")
        for row in rows:
            if row.generator is None:
                row.generator = self.new_generator(row.seed)
        flags = BatchFlags.of(rows)
        steps = JaxSteps(power_of_two(len(rows)), host.shape[1], self.device)
        raw = steps.put(_padded(host, steps.size))
        logprobs, tokens = run_pipeline(steps, raw, rows, flags)
        return _results(logprobs, tokens, rows, flags.max_top_logprobs)

    def score_prompt(self, logits: ArrayLike, tokens: Sequence[int], top: int) -> PromptScores:
        host = np.asarray(logits, dtype=np.float32)
        if host.shape[0] != len(tokens):
            raise ValueError(f"{host.shape[0]} positions of logits for {len(tokens)} tokens")
        scored = len(tokens) - 1  # position i-1 predicts token i; the last predicts what follows
        if scored == 0:
            return PromptScores(logprobs=(None,), top=(None,))
        size = max(SMALLEST_CHUNK, power_of_two(scored))  # the prefill's floor
        targets = np.zeros(size, dtype=np.int32)
        targets[:scored] = tokens[1:]
        logprobs = model_logprobs(self._put(_padded(host[:-1], size)))
        chosen = np.asarray(_chosen(logprobs, self._put(targets)))[:scored].tolist()
        tops = _top_lists(logprobs, top, scored) if top > 0 else [()] * scored
        return PromptScores(logprobs=(None, *chosen), top=(None, *tops))

    def compile_ahead(self, max_rows: int, vocab: int) -> None:
        """Compile every step for every padded row count of batches of 1..`max_rows`, by
        sampling zeros with rows that take every step."""
        started = time.perf_counter()
        sizes = []
        size = 1
        while size <= power_of_two(max_rows):
            rows = [
                RowSampling(
                    temperature=0.5,
                    top_p=0.5,
                    logit_bias={0: 1.0},
                    frequency_penalty=0.5,
                    seed=0,
                    top_logprobs=1,
                    generated=[0],
                )
                for _ in range(size)
            ]
            self.sample(np.zeros((size, vocab), dtype=np.float32), rows)
            sizes.append(size)
            size *= 2
        log.info(
            "jax_sampler_compiled",
            rows=sizes,
            seconds=round(time.perf_counter() - started, 2),
        )

    def _put(self, array: np.ndarray) -> jax.Array:
        placed: jax.Array = jax.device_put(array, self.device)
        return placed


class JaxSteps:
    """This module's jitted steps as `run_pipeline` takes them, for one batch: rows padded
    to `size`, per-row settings placed on `device` as arrays."""

    def __init__(self, size: int, vocab: int, device: jax.Device | None) -> None:
        self.size = size
        self.vocab = vocab
        self.device = device

    def put(self, array: np.ndarray) -> jax.Array:
        placed: jax.Array = jax.device_put(array, self.device)
        return placed

    def model_logprobs(self, logits: jax.Array) -> jax.Array:
        stepped: jax.Array = model_logprobs(logits)
        return stepped

    def apply_logit_bias(self, logits: jax.Array, rows: Sequence[RowSampling]) -> jax.Array:
        bias = self.put(_bias_matrix(rows, self.size, self.vocab))
        stepped: jax.Array = apply_logit_bias(logits, bias)
        return stepped

    def apply_penalties(self, logits: jax.Array, rows: Sequence[RowSampling]) -> jax.Array:
        inputs = _penalty_inputs(rows, self.size, self.vocab)
        stepped: jax.Array = apply_penalties(logits, *map(self.put, inputs))
        return stepped

    def greedy_tokens(self, logits: jax.Array) -> jax.Array:
        stepped: jax.Array = greedy_tokens(logits)
        return stepped

    def apply_temperature(self, logits: jax.Array, rows: Sequence[RowSampling]) -> jax.Array:
        temperatures = [row.temperature if row.temperature > 0 else 1.0 for row in rows]
        divisors = self.put(_column(temperatures, self.size, 1.0))
        stepped: jax.Array = apply_temperature(logits, divisors)
        return stepped

    def apply_top_p(self, logits: jax.Array, rows: Sequence[RowSampling]) -> jax.Array:
        thresholds = [row.top_p if row.top_p < 1 else np.inf for row in rows]
        top_p = self.put(_column(thresholds, self.size, np.inf))
        stepped: jax.Array = apply_top_p(logits, top_p)
        return stepped

    def sample_tokens(
        self, logits: jax.Array, greedy: jax.Array, rows: Sequence[RowSampling]
    ) -> jax.Array:
        """Draws for the sampling rows, advancing their keys (greedy rows keep theirs)."""
        keys = np.zeros((self.size, 2), dtype=np.uint32)
        drawing = np.zeros(self.size, dtype=bool)
        for index, row in enumerate(rows):
            keys[index] = row.generator.data
            drawing[index] = row.temperature != 0
        tokens: jax.Array
        tokens, advanced = sample_tokens(logits, greedy, self.put(keys), self.put(drawing))
        advanced_keys = np.asarray(advanced)
        for index, row in enumerate(rows):
            if drawing[index]:
                row.generator.data = advanced_keys[index]
        return tokens


@jax.jit
def model_logprobs(logits: jax.Array) -> jax.Array:
    """Step 1: the model's own distribution, before any request setting bends it."""
    return jax.nn.log_softmax(logits, axis=-1)


@jax.jit
def apply_logit_bias(logits: jax.Array, bias: jax.Array) -> jax.Array:
    """Step 2: add each row's bias to its tokens' logits."""
    return logits + bias


@jax.jit
def apply_penalties(
    logits: jax.Array, counts: jax.Array, frequency: jax.Array, presence: jax.Array
) -> jax.Array:
    """Step 3: logit[j] -= count[j] * frequency + (count[j] > 0) * presence, counting the
    tokens this row has generated (not its prompt)."""
    present = (counts > 0).astype(logits.dtype)
    return logits - counts * frequency[:, None] - present * presence[:, None]


@jax.jit
def greedy_tokens(logits: jax.Array) -> jax.Array:
    """Step 4 for greedy rows: the argmax after steps 2-3."""
    return jnp.argmax(logits, axis=-1)


@jax.jit
def apply_temperature(logits: jax.Array, temperatures: jax.Array) -> jax.Array:
    """Step 4 for sampling rows: logits / temperature (greedy rows divide by 1 and take
    their argmax in `sample_tokens`)."""
    return logits / temperatures[:, None]


@jax.jit
def apply_top_p(logits: jax.Array, top_p: jax.Array) -> jax.Array:
    """Step 5: keep the smallest set of most likely tokens whose mass reaches top_p.

    A token is kept while the mass of the tokens ranked above it is still below top_p; the
    top token is always kept (top_p = 0 means greedy). Rows with top_p >= 1 come with an
    infinite threshold: float rounding of the cumulative sum must not drop their tail."""
    order = jnp.argsort(-logits, axis=-1)
    ordered = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(ordered, axis=-1)
    mass_above = jnp.cumsum(probs, axis=-1) - probs
    drop = (mass_above >= top_p[:, None]).at[:, 0].set(False)
    ordered = jnp.where(drop, -jnp.inf, ordered)
    return jnp.take_along_axis(ordered, jnp.argsort(order, axis=-1), axis=-1)


@jax.jit
def sample_tokens(
    logits: jax.Array, greedy: jax.Array, keys: jax.Array, drawing: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """Step 6: draw each sampling row's token from softmax(logits) with its own key; the
    other rows keep their greedy token and their key. → (tokens, keys)."""

    def draw(key_data: jax.Array, row: jax.Array) -> tuple[jax.Array, jax.Array]:
        key, subkey = jax.random.split(jax.random.wrap_key_data(key_data))
        return jax.random.categorical(subkey, row), jax.random.key_data(key)

    drawn, advanced = jax.vmap(draw)(keys, logits)
    tokens = jnp.where(drawing, drawn, greedy)
    return tokens, jnp.where(drawing[:, None], advanced, keys)


@jax.jit
def _chosen(logprobs: jax.Array, tokens: jax.Array) -> jax.Array:
    return jnp.take_along_axis(logprobs, tokens[:, None].astype(jnp.int32), axis=1)[:, 0]


@partial(jax.jit, static_argnums=1)
def _top(logprobs: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
    return jax.lax.top_k(logprobs, k)


def _results(
    logprobs: jax.Array, tokens: jax.Array, rows: Sequence[RowSampling], top: int
) -> list[Sampled]:
    count = len(rows)
    chosen = np.asarray(_chosen(logprobs, tokens))[:count].tolist()
    tops = _top_lists(logprobs, top, count) if top > 0 else [()] * count
    return [
        Sampled(token=token, logprob=logprob, top=alternatives[: row.top_logprobs])
        for token, logprob, alternatives, row in zip(
            np.asarray(tokens)[:count].tolist(), chosen, tops, rows, strict=True
        )
    ]


def _top_lists(logprobs: jax.Array, top: int, count: int) -> list[TopList]:
    """The `top` best (token, logprob) pairs of the first `count` rows, best first."""
    vocab = logprobs.shape[-1]
    k = min(max(power_of_two(top), SMALLEST_TOP), vocab)
    values, indices = _top(logprobs, k)
    values_list = np.asarray(values)[:count, :top].tolist()
    indices_list = np.asarray(indices)[:count, :top].tolist()
    return [
        tuple(zip(row_indices, row_values, strict=True))
        for row_indices, row_values in zip(indices_list, values_list, strict=True)
    ]


def _padded(logits: np.ndarray, size: int) -> np.ndarray:
    """Rows padded with zeros up to `size` (their results are dropped)."""
    if logits.shape[0] == size:
        return logits
    return np.pad(logits, ((0, size - logits.shape[0]), (0, 0)))


def _column(values: Sequence[float], size: int, fill: float) -> np.ndarray:
    column = np.full(size, fill, dtype=np.float32)
    column[: len(values)] = values
    return column


def _bias_matrix(rows: Sequence[RowSampling], size: int, vocab: int) -> np.ndarray:
    bias = np.zeros((size, vocab), dtype=np.float32)
    for index, row in enumerate(rows):
        if not row.logit_bias:
            continue
        token_ids = list(row.logit_bias)
        if min(token_ids) < 0 or max(token_ids) >= vocab:
            raise ValueError(f"logit_bias names a token outside the vocabulary 0..{vocab - 1}")
        bias[index, token_ids] = [row.logit_bias[token] for token in token_ids]
    return bias


def _penalty_inputs(
    rows: Sequence[RowSampling], size: int, vocab: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generated-token counts [size, vocab] and per-row frequency and presence [size]."""
    counts = np.zeros((size, vocab), dtype=np.float32)
    frequency = np.zeros(size, dtype=np.float32)
    presence = np.zeros(size, dtype=np.float32)
    for index, row in enumerate(rows):
        if not has_penalty(row):
            continue
        counts[index] = np.bincount(row.generated, minlength=vocab)[:vocab]
        frequency[index] = row.frequency_penalty
        presence[index] = row.presence_penalty
    return counts, frequency, presence
