"""What the Llama-family forward pass reads from a loaded Hugging Face model: its shape,
views of its weight tensors (never copies), and its rotary-embedding frequencies.

Supported: `model_type` llama, mistral and qwen2 (the same decoder block: RMSNorm,
grouped-query attention with optional q/k/v biases, SwiGLU MLP), with rotary embeddings
whose frequencies do not depend on the sequence length."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

SUPPORTED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2"})
# "dynamic" and "longrope" change the frequencies with the sequence length, which a
# precomputed table cannot follow.
STATIC_ROPE_TYPES = frozenset({"default", "linear", "llama3", "yarn"})


@dataclass(frozen=True, slots=True)
class Linear:
    weight: torch.Tensor
    bias: torch.Tensor | None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


@dataclass(frozen=True, slots=True)
class LayerWeights:
    input_norm: torch.Tensor
    q: Linear
    k: Linear
    v: Linear
    o: Linear
    post_norm: torch.Tensor
    gate: Linear
    up: Linear
    down: Linear


@dataclass(frozen=True, slots=True)
class LlamaWeights:
    embed: torch.Tensor
    layers: tuple[LayerWeights, ...]
    final_norm: torch.Tensor
    lm_head: Linear


@dataclass(frozen=True, slots=True)
class LlamaShape:
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab_size: int
    rms_eps: float
    context_window: int


def llama_shape(config: Any) -> LlamaShape:
    """The dimensions of a supported model; ValueError naming what is unsupported."""
    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"model_type {model_type!r} is not supported by the local runners "
            f"(supported: {', '.join(sorted(SUPPORTED_MODEL_TYPES))})"
        )
    if getattr(config, "hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {config.hidden_act!r} is not supported (only silu)")
    heads = int(config.num_attention_heads)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return LlamaShape(
        layers=int(config.num_hidden_layers),
        heads=heads,
        kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
        head_dim=int(head_dim),
        vocab_size=int(config.vocab_size),
        rms_eps=float(config.rms_norm_eps),
        context_window=int(config.max_position_embeddings),
    )


def check_sliding_window(config: Any, max_context: int) -> None:
    """Refuse a cache longer than a sliding attention window: this forward attends to every
    cached position, which is only the model's own attention inside the window."""
    window = getattr(config, "sliding_window", None)
    uses_window = getattr(config, "use_sliding_window", True)
    if window is not None and uses_window and window < max_context:
        raise ValueError(
            f"max_context {max_context} exceeds the model's sliding window {window}; "
            f"set max_context to at most {window}"
        )


def llama_weights(model: PreTrainedModel) -> LlamaWeights:
    """Views of the model's parameters, shared with it (tied embeddings stay tied)."""
    decoder: Any = model.model
    return LlamaWeights(
        embed=decoder.embed_tokens.weight,
        layers=tuple(_layer_weights(layer) for layer in decoder.layers),
        final_norm=decoder.norm.weight,
        lm_head=_linear(model.lm_head),
    )


def _layer_weights(layer: Any) -> LayerWeights:
    attention, mlp = layer.self_attn, layer.mlp
    return LayerWeights(
        input_norm=layer.input_layernorm.weight,
        q=_linear(attention.q_proj),
        k=_linear(attention.k_proj),
        v=_linear(attention.v_proj),
        o=_linear(attention.o_proj),
        post_norm=layer.post_attention_layernorm.weight,
        gate=_linear(mlp.gate_proj),
        up=_linear(mlp.up_proj),
        down=_linear(mlp.down_proj),
    )


def _linear(module: Any) -> Linear:
    weight: torch.Tensor = module.weight
    bias: torch.Tensor | None = getattr(module, "bias", None)
    return Linear(weight.detach(), None if bias is None else bias.detach())


def rotary_tables(
    config: Any, shape: LlamaShape, positions: int, dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin for positions 0..positions-1, [positions, head_dim], in `dtype`.

    Computed in float32 and then cast, as transformers does, so that bf16 models see the
    same rounding."""
    inv_freq, scaling = _inverse_frequencies(config, shape, device)
    steps = torch.arange(positions, dtype=torch.float32, device=device)
    freqs = steps[:, None] * inv_freq[None, :]
    angles = torch.cat((freqs, freqs), dim=-1)
    return (angles.cos() * scaling).to(dtype), (angles.sin() * scaling).to(dtype)


def _inverse_frequencies(
    config: Any, shape: LlamaShape, device: torch.device
) -> tuple[torch.Tensor, float]:
    parameters = _rope_parameters(config)
    rope_type = parameters.get("rope_type", "default")
    if rope_type not in STATIC_ROPE_TYPES:
        raise ValueError(
            f"rope_type {rope_type!r} is not supported "
            f"(supported: {', '.join(sorted(STATIC_ROPE_TYPES))})"
        )
    if parameters.get("partial_rotary_factor", 1.0) != 1.0:
        raise ValueError("partial rotary embeddings are not supported")
    if rope_type != "default":
        inv_freq, scaling = ROPE_INIT_FUNCTIONS[rope_type](config, device)
        return inv_freq.to(device=device, dtype=torch.float32), float(scaling)
    theta = float(parameters["rope_theta"])
    exponents = torch.arange(0, shape.head_dim, 2, dtype=torch.int64, device=device)
    return 1.0 / (theta ** (exponents.float() / shape.head_dim)), 1.0


def _rope_parameters(config: Any) -> dict[str, Any]:
    # transformers 5 keeps everything in `rope_parameters`; 4.x split it into `rope_theta`
    # and an optional `rope_scaling` dict whose type key was once spelled "type".
    parameters = getattr(config, "rope_parameters", None)
    if isinstance(parameters, dict) and "rope_theta" in parameters:
        return parameters
    scaling = dict(getattr(config, "rope_scaling", None) or {})
    scaling.setdefault("rope_type", scaling.get("type", "default"))
    scaling.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
    return scaling
