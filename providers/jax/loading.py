"""Loading a Llama-family model for JAX: the checkpoint is read by `providers.torch`'s
loader (packaged names, Hugging Face directories, GGUF files and their conversion cache
all work as for `kind: torch`), in float32 on the CPU, then copied into JAX arrays on the
chosen device in the chosen dtype. The torch model is dropped once copied."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
import structlog
from transformers import PreTrainedTokenizerBase

from providers.jax.weights import JaxLlama, jax_llama
from providers.local.packaged import ModelSource
from providers.local.slots import context_limit
from providers.torch.llama_weights import LlamaShape
from providers.torch.loading import load_causal_lm

log = structlog.get_logger("turnout.providers.jax")

# "cuda" is "gpu" under kind: torch's name, so that switching `kind:` alone works.
DeviceName = Literal["auto", "cpu", "gpu", "cuda"]
DtypeName = Literal["auto", "float32", "bfloat16", "float16"]


@dataclass(frozen=True, slots=True)
class LoadedJaxModel:
    name: str
    model: JaxLlama
    shape: LlamaShape
    tokenizer: PreTrainedTokenizerBase
    max_context: int
    device: jax.Device


def resolve_device(device: DeviceName) -> jax.Device:
    if device == "auto":
        return jax.devices()[0]  # the default backend's first device
    try:
        return jax.devices("gpu" if device == "cuda" else device)[0]
    except RuntimeError as error:  # jaxlib has no such backend
        raise ValueError(f"device {device!r} requested but JAX sees none: {error}") from error


def resolve_dtype(dtype: DtypeName, device: jax.Device) -> np.dtype[Any]:
    if dtype == "auto":
        # CPU half-precision matmuls are slow and lose accuracy; accelerators want bf16.
        dtype = "float32" if device.platform == "cpu" else "bfloat16"
    chosen: np.dtype[Any] = jnp.dtype(dtype)
    return chosen


def load_jax_model(
    source: ModelSource | str,
    *,
    device: DeviceName = "auto",
    dtype: DtypeName = "float32",
    max_context: int | None = None,
) -> LoadedJaxModel:
    """Read a checkpoint and place it on a JAX device; ValueError if it is unsupported."""
    target = resolve_device(device)
    target_dtype = resolve_dtype(dtype, target)
    loaded = load_causal_lm(source, device="cpu", dtype="float32")
    limit = context_limit(max_context, loaded.context_window)
    started = time.perf_counter()
    model, shape = jax_llama(loaded.model, max_context=limit, dtype=target_dtype, device=target)
    log.info(
        "jax_model_placed",
        model=loaded.name,
        device=str(target),
        dtype=target_dtype.name,
        seconds=round(time.perf_counter() - started, 2),
    )
    return LoadedJaxModel(loaded.name, model, shape, loaded.tokenizer, limit, target)
