"""The prefix store's copies, as pure functions for `jax.jit`: blocks of `block_tokens`
positions of every layer's keys and values move between a slot of the KV cache and the
store, a `KVCache` of its own shaped [layers, blocks, block_tokens, kv_heads, head_dim]
(apart from the slots, so that a cached prefix outlives the sequence that computed it).

Block counts are padded to a bucket by repeating a real block: a repeated save writes the
same values to the same store block, a repeated load writes a copy past the blocks the
slot keeps (stale positions, masked until overwritten; those past the cache are dropped)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from providers.jax.forward import KVCache, empty_cache
from providers.torch.llama_weights import LlamaShape


def empty_store(
    shape: LlamaShape, *, blocks: int, block_tokens: int, dtype: jnp.dtype, device: jax.Device
) -> KVCache:
    """Zeros (`blocks` may be 0: no prefix cache), laid out as the slots' cache is: a block
    is a slot of `block_tokens` positions."""
    return empty_cache(shape, slots=blocks, context=block_tokens, dtype=dtype, device=device)


def save_blocks(
    cache: KVCache, store: KVCache, slot: jax.Array, indices: jax.Array, block_ids: jax.Array
) -> KVCache:
    """Store block block_ids[n] becomes `slot`'s positions indices[n] * block_tokens.. of
    one block, every layer → the store."""
    block_tokens = store.keys.shape[2]
    positions = indices[:, None] * block_tokens + jnp.arange(block_tokens)[None, :]

    def saved(source: jax.Array, target: jax.Array) -> jax.Array:
        return target.at[:, block_ids].set(source[:, slot, positions])  # [layers, n, bt, ...]

    return KVCache(saved(cache.keys, store.keys), saved(cache.values, store.values))


def load_blocks(cache: KVCache, store: KVCache, slot: jax.Array, block_ids: jax.Array) -> KVCache:
    """`slot`'s positions n * block_tokens.. of one block become store block block_ids[n],
    every layer → the cache."""
    layers, _, block_tokens, kv_heads, head_dim = store.keys.shape
    positions = jnp.arange(block_ids.shape[0] * block_tokens)

    def loaded(source: jax.Array, target: jax.Array) -> jax.Array:
        blocks = source[:, block_ids].reshape(layers, -1, kv_heads, head_dim)
        return target.at[:, slot, positions].set(blocks, mode="drop")

    return KVCache(loaded(store.keys, cache.keys), loaded(store.values, cache.values))
