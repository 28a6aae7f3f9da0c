"""A loaded Hugging Face Llama-family model's weights as JAX arrays, laid out for the JAX
forward pass: each kind of layer tensor stacked over the layers (one `lax.scan` body
compiles once instead of once per layer), projections as [in, out] so a matmul needs no
transpose, and the rotary tables computed by the PyTorch side's own code.

The checkpoint is read once through `providers.torch` (GGUF parsing, the conversion cache
and the supported-architecture checks exist once); after conversion the torch model can be
dropped: nothing here keeps a reference to it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import torch
from transformers import PreTrainedModel

from providers.torch.llama_weights import (
    LayerWeights,
    Linear,
    LlamaShape,
    check_sliding_window,
    llama_shape,
    llama_weights,
    rotary_tables,
)


class LayerStack(NamedTuple):
    """Every decoder layer's tensors, stacked on a leading layer axis [layers, ...]."""

    input_norm: jax.Array  # [layers, hidden]
    q: jax.Array  # [layers, hidden, heads * head_dim]
    k: jax.Array  # [layers, hidden, kv_heads * head_dim]
    v: jax.Array
    o: jax.Array  # [layers, heads * head_dim, hidden]
    post_norm: jax.Array
    gate: jax.Array  # [layers, hidden, intermediate]
    up: jax.Array
    down: jax.Array  # [layers, intermediate, hidden]
    q_bias: jax.Array | None  # qwen2 has q/k/v biases; llama and mistral have none
    k_bias: jax.Array | None
    v_bias: jax.Array | None


class JaxLlama(NamedTuple):
    """The model as one pytree, passed to the compiled steps as an argument (never closed
    over: XLA would fold half a gigabyte of constants into every executable)."""

    embed: jax.Array  # [vocab, hidden]
    layers: LayerStack
    final_norm: jax.Array  # [hidden]
    lm_head: jax.Array | None  # [hidden, vocab]; None: tied to `embed`
    cos: jax.Array  # [max_context, head_dim]
    sin: jax.Array


def jax_llama(
    model: PreTrainedModel, *, max_context: int, dtype: Any, device: jax.Device
) -> tuple[JaxLlama, LlamaShape]:
    """Copy a supported model's weights onto `device` in `dtype` (ValueError if the model
    or the cache length is unsupported, with the same messages as the torch runner)."""
    shape = llama_shape(model.config)
    check_sliding_window(model.config, max_context)
    weights = llama_weights(model)
    with torch.inference_mode():
        cos, sin = rotary_tables(
            model.config, shape, max_context, torch.float32, torch.device("cpu")
        )

    def put(tensor: torch.Tensor | np.ndarray) -> jax.Array:
        array = tensor if isinstance(tensor, np.ndarray) else _numpy(tensor)
        # Cast from float32 by XLA (round to nearest even), as torch casts.
        placed: jax.Array = jax.device_put(jnp.asarray(array).astype(dtype), device)
        return placed

    layers = weights.layers
    tied = weights.lm_head.weight.data_ptr() == weights.embed.data_ptr()
    stack = LayerStack(
        input_norm=put(_stacked(layer.input_norm for layer in layers)),
        q=put(_stacked_linear(layers, "q")),
        k=put(_stacked_linear(layers, "k")),
        v=put(_stacked_linear(layers, "v")),
        o=put(_stacked_linear(layers, "o")),
        post_norm=put(_stacked(layer.post_norm for layer in layers)),
        gate=put(_stacked_linear(layers, "gate")),
        up=put(_stacked_linear(layers, "up")),
        down=put(_stacked_linear(layers, "down")),
        q_bias=_stacked_bias(layers, "q", put),
        k_bias=_stacked_bias(layers, "k", put),
        v_bias=_stacked_bias(layers, "v", put),
    )
    if weights.lm_head.bias is not None:
        raise ValueError("an output projection with a bias is not supported")
    jax_model = JaxLlama(
        embed=put(weights.embed),
        layers=stack,
        final_norm=put(weights.final_norm),
        lm_head=None if tied else put(_numpy(weights.lm_head.weight).T),
        cos=put(cos),
        sin=put(sin),
    )
    return jax_model, shape


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    # float32 first: numpy has no bfloat16, and every supported dtype widens exactly.
    return tensor.detach().to("cpu", torch.float32).numpy()


def _stacked(tensors: Iterable[torch.Tensor]) -> np.ndarray:
    return np.stack([_numpy(tensor) for tensor in tensors])


def _stacked_linear(layers: tuple[LayerWeights, ...], name: str) -> np.ndarray:
    """A projection of every layer as [layers, in, out] (torch stores [out, in])."""
    linears: list[Linear] = [getattr(layer, name) for layer in layers]
    return np.stack([_numpy(linear.weight).T for linear in linears])


def _stacked_bias(
    layers: tuple[LayerWeights, ...], name: str, put: Callable[[np.ndarray], jax.Array]
) -> jax.Array | None:
    biases: list[torch.Tensor | None] = [getattr(layer, name).bias for layer in layers]
    if all(bias is None for bias in biases):
        return None
    if any(bias is None for bias in biases):
        raise ValueError(f"some layers have a {name}_proj bias and some do not")
    return put(_stacked(bias for bias in biases if bias is not None))
