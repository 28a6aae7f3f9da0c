"""The BERT encoder forward pass in JAX, as pure functions for `jax.jit`, and the sentence
embedding made from it (what transformers' `BertModel` and `providers.torch.embedder` do):

word + position + token-type-0 embeddings → LayerNorm → per layer (post-LN): self-attention
over the real tokens → add & LayerNorm → GELU MLP → add & LayerNorm; then the last hidden
states mean-pooled over real tokens and L2-normalized.

Rows and positions padded up to shape buckets change nothing: a padded key is masked out of
every query's softmax (its weight underflows to exactly 0), a padded query's output is
excluded from the pooling, and a padded row (all mask 0) pools to a zero vector that the
caller drops. Layers run in one `lax.scan`, so the forward compiles one layer body, not
six. Float32 matmuls ask for full precision: GPUs otherwise round float32 inputs to TF32,
which torch does not."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from providers.jax.bert_weights import BertLayers, BertShape, JaxBert

HIGHEST = lax.Precision.HIGHEST
POOL_EPSILON = 1e-9  # the torch embedder's clamp on a row's token count
NORM_EPSILON = 1e-12  # torch's F.normalize
LOWEST = float(np.finfo(np.float32).min)  # the masked score: the forward is float32


def sentence_embeddings(
    shape: BertShape, model: JaxBert, ids: jax.Array, mask: jax.Array
) -> jax.Array:
    """ids, mask [B, T] int32 (mask 1 on real tokens) → float32 unit vectors [B, hidden]."""
    hidden = encode(shape, model, ids, mask)
    weights = mask[:, :, None].astype(hidden.dtype)
    summed = (hidden * weights).sum(axis=1)
    pooled = summed / jnp.maximum(weights.sum(axis=1), POOL_EPSILON)
    norms = jnp.linalg.norm(pooled, axis=1, keepdims=True)
    return pooled / jnp.maximum(norms, NORM_EPSILON)


def encode(shape: BertShape, model: JaxBert, ids: jax.Array, mask: jax.Array) -> jax.Array:
    """ids, mask [B, T] → the last hidden states [B, T, hidden] (transformers'
    `last_hidden_state`; rows past a row's real tokens hold values nobody should read)."""
    steps = ids.shape[1]
    embedded = model.words[ids] + model.segment + model.positions[:steps][None]
    hidden = _layer_norm(embedded, model.embed_norm, model.embed_norm_bias, shape.eps)
    keys_kept = mask[:, None, None, :].astype(bool)  # [B, 1 (heads), 1 (queries), T]

    def layer_step(hidden: jax.Array, layer: BertLayers) -> tuple[jax.Array, None]:
        attended = _attention(shape, layer, hidden, keys_kept)
        hidden = _layer_norm(
            attended + hidden, layer.attention_norm, layer.attention_norm_bias, shape.eps
        )
        inner = jax.nn.gelu(_dense(hidden, layer.up, layer.up_bias), approximate=False)
        output = _dense(inner, layer.down, layer.down_bias)
        hidden = _layer_norm(output + hidden, layer.output_norm, layer.output_norm_bias, shape.eps)
        return hidden, None

    hidden, _ = lax.scan(layer_step, hidden, model.layers)
    return hidden


def _attention(
    shape: BertShape, layer: BertLayers, hidden: jax.Array, keys_kept: jax.Array
) -> jax.Array:
    batch, steps, width = hidden.shape
    head_dim = width // shape.heads

    def heads(weight: jax.Array, bias: jax.Array) -> jax.Array:
        return _dense(hidden, weight, bias).reshape(batch, steps, shape.heads, head_dim)

    queries, keys = heads(layer.q, layer.q_bias), heads(layer.k, layer.k_bias)
    values = heads(layer.v, layer.v_bias)
    scores = jnp.einsum("bqhd,bkhd->bhqk", queries, keys, precision=HIGHEST)
    scores = scores / math.sqrt(head_dim)
    # The lowest finite value, not -inf: a padded row (no real key) stays finite.
    scores = jnp.where(keys_kept, scores, LOWEST)
    probs = jax.nn.softmax(scores, axis=-1)
    context = jnp.einsum("bhqk,bkhd->bqhd", probs, values, precision=HIGHEST)
    return _dense(context.reshape(batch, steps, width), layer.o, layer.o_bias)


def _dense(x: jax.Array, weight: jax.Array, bias: jax.Array) -> jax.Array:
    return jnp.matmul(x, weight, precision=HIGHEST) + bias


def _layer_norm(x: jax.Array, weight: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
    mean = x.mean(axis=-1, keepdims=True)
    variance = jnp.square(x - mean).mean(axis=-1, keepdims=True)
    return (x - mean) * lax.rsqrt(variance + eps) * weight + bias
