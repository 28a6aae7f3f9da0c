"""Configuration of a `torch` deployment, as written in Turnout's config file."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from providers.capabilities import CapabilityOverrides


class TorchSettings(BaseModel):
    """Which model to run in-process with PyTorch, where, and how much KV cache to hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["torch"]
    # A packaged name (see `providers.local.packaged`) or a path to a Hugging Face model
    # directory or a .gguf file.
    model: str = "smollm2-135m-instruct"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # "auto": float32 on CPU (CPU half-precision matmuls are slow and lossy), bfloat16 on CUDA.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_slots: int = Field(default=16, ge=1)
    # None: the model's context window, capped at 2048 to bound KV-cache memory.
    max_context: int | None = Field(default=None, ge=1)
    capabilities: CapabilityOverrides | None = None
