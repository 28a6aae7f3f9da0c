"""The Llama-family forward pass in JAX, as pure functions for `jax.jit`: RMSNorm, rotary
embeddings, grouped-query attention, SwiGLU, tied or separate output projection, over a
slot KV cache.

Two steps, the same as `providers.torch.llama`: `prefill` runs one slot's prompt (padded
to a bucket length; causal attention keeps the padding from touching real positions) and
projects its last real position onto the vocabulary (every position when compiled for
prompt scoring), and `decode` appends one token to each of a batch of slots at different
lengths, attending to each slot's cached positions below a window bucket. Layers run in
one `lax.scan`, so a step compiles one layer body, not thirty. Float32 matmuls ask for
full precision: GPUs otherwise round float32 inputs to TF32, which torch does not. Logits
come out float32."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from providers.jax.weights import JaxLlama, LayerStack
from providers.torch.llama_weights import LlamaShape

HIGHEST = lax.Precision.HIGHEST


class KVCache(NamedTuple):
    """Keys and values [layers, slots, context, kv_heads, head_dim]; positions past a
    slot's length hold stale data that attention masks."""

    keys: jax.Array
    values: jax.Array


def empty_cache(
    shape: LlamaShape, *, slots: int, context: int, dtype: jnp.dtype, device: jax.Device
) -> KVCache:
    """Zeros, never uninitialized memory: a masked NaN in V still poisons 0 * NaN sums."""
    dims = (shape.layers, slots, context, shape.kv_heads, shape.head_dim)
    zeros = jax.device_put(jnp.zeros(dims, dtype), device)
    return KVCache(zeros, jnp.zeros_like(zeros))


def prefill(
    shape: LlamaShape,
    every_position: bool,
    model: JaxLlama,
    cache: KVCache,
    tokens: jax.Array,
    slot: jax.Array,
    last: jax.Array,
) -> tuple[jax.Array, KVCache]:
    """tokens [T] (a prompt padded to a bucket, its last real token at index `last`) into
    `slot` → (float32 logits, cache): of position `last` [1, V], or of every position
    [T, V] if `every_position` (static: each value compiles its own executable)."""
    steps = tokens.shape[0]
    cos, sin = model.cos[:steps, None], model.sin[:steps, None]  # [T, 1, D]
    causal = jnp.tril(jnp.ones((steps, steps), dtype=bool))

    def layer_step(
        carry: tuple[jax.Array, KVCache], xs: tuple[jax.Array, LayerStack]
    ) -> tuple[tuple[jax.Array, KVCache], None]:
        hidden, cache = carry
        index, layer = xs
        queries, keys, values = _projections(shape, layer, hidden, cos, sin)  # [T, heads, D]
        start = (index, slot, 0, 0, 0)
        cache = KVCache(
            lax.dynamic_update_slice(cache.keys, keys[None, None], start),
            lax.dynamic_update_slice(cache.values, values[None, None], start),
        )
        # Attends to the fresh keys, not the cache: [T] positions against [T] positions.
        attended = _attend(shape, queries[None], keys[None], values[None], causal[None])[0]
        return (_finish_block(shape, layer, hidden, attended), cache), None

    hidden = model.embed[tokens]
    layers = (jnp.arange(shape.layers), model.layers)
    (hidden, cache), _ = lax.scan(layer_step, (hidden, cache), layers)
    if not every_position:  # the vocabulary projection dominates a short prompt's cost
        hidden = lax.dynamic_slice_in_dim(hidden, last, 1)
    return _logits(shape, model, hidden), cache


def decode(
    shape: LlamaShape,
    window: int,
    model: JaxLlama,
    cache: KVCache,
    tokens: jax.Array,
    slots: jax.Array,
    positions: jax.Array,
) -> tuple[jax.Array, KVCache]:
    """tokens [B] at positions [B] of slots [B] → (float32 next-token logits [B, V], cache).

    Attends to each slot's first `window` positions (every position must lie below it).
    A repeated (slot, position, token) row writes the same values twice: padding a batch
    up to its bucket with copies of a real row is harmless."""
    cos, sin = model.cos[positions][:, None], model.sin[positions][:, None]  # [B, 1, D]
    visible = jnp.arange(window)[None, :] <= positions[:, None]  # [B, window]

    def layer_step(
        carry: tuple[jax.Array, KVCache], xs: tuple[jax.Array, LayerStack]
    ) -> tuple[tuple[jax.Array, KVCache], None]:
        hidden, cache = carry
        index, layer = xs
        queries, keys, values = _projections(shape, layer, hidden, cos, sin)  # [B, heads, D]
        cache = KVCache(
            cache.keys.at[index, slots, positions].set(keys),
            cache.values.at[index, slots, positions].set(values),
        )
        cached_keys = cache.keys[index, slots, :window]  # [B, window, kv_heads, D]
        cached_values = cache.values[index, slots, :window]
        attended = _attend(shape, queries[:, None], cached_keys, cached_values, visible[:, None])
        return (_finish_block(shape, layer, hidden, attended[:, 0]), cache), None

    hidden = model.embed[tokens]
    layers = (jnp.arange(shape.layers), model.layers)
    (hidden, cache), _ = lax.scan(layer_step, (hidden, cache), layers)
    return _logits(shape, model, hidden), cache


def copy_prefix(cache: KVCache, source: jax.Array, target: jax.Array, length: int) -> KVCache:
    """`target`'s first `length` positions become `source`'s (length: a bucket)."""

    def copied(array: jax.Array) -> jax.Array:
        layers, _, _, kv_heads, head_dim = array.shape
        sizes = (layers, 1, length, kv_heads, head_dim)
        prefix = lax.dynamic_slice(array, (0, source, 0, 0, 0), sizes)
        return lax.dynamic_update_slice(array, prefix, (0, target, 0, 0, 0))

    return KVCache(copied(cache.keys), copied(cache.values))


def _projections(
    shape: LlamaShape, layer: LayerStack, hidden: jax.Array, cos: jax.Array, sin: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """hidden [N, hidden] → rotated queries [N, heads, D], keys and values [N, kv_heads, D]."""
    normed = rms_norm(hidden, layer.input_norm, shape.rms_eps)
    queries = _heads(_linear(normed, layer.q, layer.q_bias), shape.heads, shape.head_dim)
    keys = _heads(_linear(normed, layer.k, layer.k_bias), shape.kv_heads, shape.head_dim)
    values = _heads(_linear(normed, layer.v, layer.v_bias), shape.kv_heads, shape.head_dim)
    return rotate(queries, cos, sin), rotate(keys, cos, sin), values


def _finish_block(
    shape: LlamaShape, layer: LayerStack, hidden: jax.Array, attended: jax.Array
) -> jax.Array:
    """Attention output projection and residual, then the SwiGLU MLP and its residual."""
    merged = attended.reshape(attended.shape[0], shape.heads * shape.head_dim)
    hidden = hidden + _linear(merged, layer.o, None)
    normed = rms_norm(hidden, layer.post_norm, shape.rms_eps)
    gated = jax.nn.silu(_linear(normed, layer.gate, None)) * _linear(normed, layer.up, None)
    return hidden + _linear(gated, layer.down, None)


def _attend(
    shape: LlamaShape, queries: jax.Array, keys: jax.Array, values: jax.Array, mask: jax.Array
) -> jax.Array:
    """Grouped-query attention. queries [B, T, heads, D], keys/values [B, S, kv_heads, D],
    mask [B, T, S] (True: may attend) → [B, T, heads, D]. Query head h reads kv head
    h // (heads / kv_heads), as transformers' `repeat_kv` arranges them."""
    batch, steps, heads, head_dim = queries.shape
    groups = heads // shape.kv_heads
    grouped = queries.reshape(batch, steps, shape.kv_heads, groups, head_dim)
    scores = jnp.einsum("btkgd,bskd->bkgts", grouped, keys, precision=HIGHEST)
    scores = scores.astype(jnp.float32) * (head_dim**-0.5)
    scores = jnp.where(mask[:, None, None], scores, -jnp.inf)
    weights = jax.nn.softmax(scores, axis=-1).astype(values.dtype)
    attended = jnp.einsum("bkgts,bskd->btkgd", weights, values, precision=HIGHEST)
    return attended.reshape(batch, steps, heads, head_dim)


def _logits(shape: LlamaShape, model: JaxLlama, hidden: jax.Array) -> jax.Array:
    normed = rms_norm(hidden, model.final_norm, shape.rms_eps)
    if model.lm_head is None:  # tied: the embedding matrix, read transposed
        logits = jnp.einsum("nh,vh->nv", normed, model.embed, precision=HIGHEST)
    else:
        logits = jnp.matmul(normed, model.lm_head, precision=HIGHEST)
    return logits.astype(jnp.float32)


def rms_norm(hidden: jax.Array, weight: jax.Array, eps: float) -> jax.Array:
    """Normalized in float32 and cast back before the weight, as transformers does (in
    bf16 the order of the cast changes the logits)."""
    as_float = hidden.astype(jnp.float32)
    variance = jnp.mean(as_float * as_float, axis=-1, keepdims=True)
    return weight * (as_float * lax.rsqrt(variance + eps)).astype(hidden.dtype)


def rotate(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotary embedding, transformers' `rotate_half` layout (halves, not interleaved)."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate((-x[..., half:], x[..., :half]), axis=-1)
    return x * cos + rotated * sin


def _heads(projected: jax.Array, heads: int, head_dim: int) -> jax.Array:
    return projected.reshape(projected.shape[0], heads, head_dim)


def _linear(x: jax.Array, weight: jax.Array, bias: jax.Array | None) -> jax.Array:
    out = jnp.matmul(x, weight, precision=HIGHEST)
    return out if bias is None else out + bias
