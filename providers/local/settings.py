"""What every in-process sampler's config says, whatever framework runs it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from providers.capabilities import CapabilityOverrides


class LocalModelSettings(BaseModel):
    """Which model to run in-process, how precisely, and how much KV cache to hold."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # A packaged name (see `providers.local.packaged`) or a path to a Hugging Face model
    # directory or a .gguf file.
    model: str = "smollm2-135m-instruct"
    # "auto": float32 on CPU (CPU half-precision matmuls are slow and lossy), bfloat16 on
    # an accelerator.
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_slots: int = Field(default=16, ge=1)
    # None: the model's context window, capped at 2048 to bound KV-cache memory.
    max_context: int | None = Field(default=None, ge=1)
    capabilities: CapabilityOverrides | None = None
