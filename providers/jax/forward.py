"""The Llama-family forward pass in JAX, as pure functions for `jax.jit`: RMSNorm, rotary
embeddings, grouped-query attention, SwiGLU, tied or separate output projection, over a
slot KV cache.

Two steps: `prefill_chunks` extends a batch of slots with a chunk of prompt each (padded
to a bucket length, each from its own start position, attending to what its slot already
holds) and projects each chunk's last real position onto the vocabulary (every position
when compiled for prompt scoring), and `decode` appends one token to each of a batch of
slots at different lengths, attending to each slot's cached positions below a window
bucket. Layers run in
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


def prefill_chunks(
    shape: LlamaShape,
    window: int,
    every_position: bool,
    model: JaxLlama,
    cache: KVCache,
    tokens: jax.Array,
    slots: jax.Array,
    starts: jax.Array,
    lasts: jax.Array,
) -> tuple[jax.Array, KVCache]:
    """tokens [B, L] (chunks padded to a bucket) at positions starts[b].. of slots [B] →
    (float32 logits, cache): of each row's position `lasts[b]` (its last real token)
    [B, V], or of every position [B, L, V] if `every_position` (static).

    Each row's keys and values go into its slot first; its queries then attend to the
    slot's first `window` positions, causally: the cached prefix 0..start-1 and the chunk
    itself. Padding positions past a row's real tokens write stale entries beyond the
    slot's length (masked until overwritten; those past the cache are dropped). A padding
    row repeating a real row writes the same values twice, as in `decode`."""
    rows, steps = tokens.shape
    positions = starts[:, None] + jnp.arange(steps)[None, :]  # [B, L]
    flat = positions.reshape(-1)
    cos, sin = model.cos[flat][:, None], model.sin[flat][:, None]  # [B*L, 1, D], clamped
    visible = jnp.arange(window)[None, None, :] <= positions[:, :, None]  # [B, L, window]
    heads = (shape.heads, shape.kv_heads, shape.kv_heads)

    def layer_step(
        carry: tuple[jax.Array, KVCache], xs: tuple[jax.Array, LayerStack]
    ) -> tuple[tuple[jax.Array, KVCache], None]:
        hidden, cache = carry
        index, layer = xs
        projected = _projections(shape, layer, hidden, cos, sin)  # [B*L, heads, D]
        queries, keys, values = (
            x.reshape(rows, steps, count, shape.head_dim)
            for x, count in zip(projected, heads, strict=True)
        )
        where = (index, slots[:, None], positions)
        cache = KVCache(
            cache.keys.at[where].set(keys, mode="drop"),
            cache.values.at[where].set(values, mode="drop"),
        )
        cached_keys = cache.keys[index, slots, :window]  # [B, window, kv_heads, D]
        cached_values = cache.values[index, slots, :window]
        attended = _attend(shape, queries, cached_keys, cached_values, visible)
        merged = attended.reshape(rows * steps, shape.heads, shape.head_dim)
        return (_finish_block(shape, layer, hidden, merged), cache), None

    hidden = model.embed[tokens.reshape(-1)]  # [B*L, hidden]
    layers = (jnp.arange(shape.layers), model.layers)
    (hidden, cache), _ = lax.scan(layer_step, (hidden, cache), layers)
    if every_position:
        return _logits(shape, model, hidden).reshape(rows, steps, -1), cache
    # The vocabulary projection dominates a short chunk's cost: only the last positions.
    last = hidden.reshape(rows, steps, -1)[jnp.arange(rows), lasts]  # [B, hidden]
    return _logits(shape, model, last), cache


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
