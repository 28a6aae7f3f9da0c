"""A loaded transformers BERT encoder's weights as JAX arrays, laid out for
`providers.jax.bert`: each kind of layer tensor stacked over the layers (one `lax.scan`
body compiles once instead of once per layer), projections as [in, out] so a matmul needs
no transpose. Only what the embedding needs is copied: no pooler, and only the first
token-type row (every input is one segment).

The model directory is read once through `providers.torch.embedder.load_encoder`; after
conversion the torch model can be dropped: nothing here keeps a reference to it."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import torch
from transformers import PreTrainedModel

LAYER = "encoder.layer.{index}."


class BertShape(NamedTuple):
    """The static part of the model (hashable: it is baked into the compiled forward)."""

    heads: int
    eps: float  # LayerNorm's


class BertLayers(NamedTuple):
    """Every encoder layer's tensors, stacked on a leading layer axis [layers, ...]."""

    q: jax.Array  # [layers, hidden, hidden]
    q_bias: jax.Array  # [layers, hidden]
    k: jax.Array
    k_bias: jax.Array
    v: jax.Array
    v_bias: jax.Array
    o: jax.Array  # [layers, hidden, hidden]
    o_bias: jax.Array
    attention_norm: jax.Array  # [layers, hidden]
    attention_norm_bias: jax.Array
    up: jax.Array  # [layers, hidden, intermediate]
    up_bias: jax.Array  # [layers, intermediate]
    down: jax.Array  # [layers, intermediate, hidden]
    down_bias: jax.Array
    output_norm: jax.Array
    output_norm_bias: jax.Array


class JaxBert(NamedTuple):
    """The encoder as one pytree, passed to the compiled forward as an argument (never
    closed over: XLA would fold the weights into every executable as constants)."""

    words: jax.Array  # [vocab, hidden]
    positions: jax.Array  # [max_positions, hidden]
    segment: jax.Array  # [hidden]: token type 0
    embed_norm: jax.Array
    embed_norm_bias: jax.Array
    layers: BertLayers


# BertLayers field → the state-dict name inside `encoder.layer.<i>.` ("weight" of a
# linear layer is transposed to [in, out]).
_LAYER_TENSORS = {
    "q": "attention.self.query.weight",
    "q_bias": "attention.self.query.bias",
    "k": "attention.self.key.weight",
    "k_bias": "attention.self.key.bias",
    "v": "attention.self.value.weight",
    "v_bias": "attention.self.value.bias",
    "o": "attention.output.dense.weight",
    "o_bias": "attention.output.dense.bias",
    "attention_norm": "attention.output.LayerNorm.weight",
    "attention_norm_bias": "attention.output.LayerNorm.bias",
    "up": "intermediate.dense.weight",
    "up_bias": "intermediate.dense.bias",
    "down": "output.dense.weight",
    "down_bias": "output.dense.bias",
    "output_norm": "output.LayerNorm.weight",
    "output_norm_bias": "output.LayerNorm.bias",
}
_LINEAR_WEIGHTS = frozenset({"q", "k", "v", "o", "up", "down"})


def check_bert(config: Any) -> BertShape:
    """The shape of a supported encoder; ValueError naming what is not supported."""
    if config.model_type != "bert":
        raise ValueError(
            f"kind: jax embeds with BERT encoders only; this model is {config.model_type!r}"
        )
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        raise ValueError("kind: jax supports BERT with absolute position embeddings only")
    if config.hidden_act != "gelu":
        raise ValueError(f"kind: jax supports BERT with exact GELU, not {config.hidden_act!r}")
    if config.hidden_size % config.num_attention_heads:
        raise ValueError("the hidden size is not a multiple of the attention heads")
    return BertShape(heads=int(config.num_attention_heads), eps=float(config.layer_norm_eps))


def jax_bert(model: PreTrainedModel, *, device: jax.Device) -> tuple[JaxBert, BertShape]:
    """Copy a BERT encoder's weights onto `device` in float32 (the torch embedder's dtype)."""
    shape = check_bert(model.config)
    tensors = {name: _numpy(tensor) for name, tensor in model.state_dict().items()}

    def put(array: np.ndarray) -> jax.Array:
        placed: jax.Array = jax.device_put(jnp.asarray(array, dtype=jnp.float32), device)
        return placed

    def stacked(field: str) -> jax.Array:
        name = _LAYER_TENSORS[field]
        per_layer = [
            tensors[LAYER.format(index=index) + name]
            for index in range(model.config.num_hidden_layers)
        ]
        if field in _LINEAR_WEIGHTS:
            per_layer = [weight.T for weight in per_layer]  # torch stores [out, in]
        return put(np.stack(per_layer))

    layers = BertLayers(**{field: stacked(field) for field in BertLayers._fields})
    bert = JaxBert(
        words=put(tensors["embeddings.word_embeddings.weight"]),
        positions=put(tensors["embeddings.position_embeddings.weight"]),
        segment=put(tensors["embeddings.token_type_embeddings.weight"][0]),
        embed_norm=put(tensors["embeddings.LayerNorm.weight"]),
        embed_norm_bias=put(tensors["embeddings.LayerNorm.bias"]),
        layers=layers,
    )
    return bert, shape


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu", torch.float32).numpy()
