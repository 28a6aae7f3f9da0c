"""What every in-process sampler's config says, whatever framework runs it."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from providers.capabilities import CapabilityOverrides


class PrefixCacheSettings(BaseModel):
    """KV blocks of recently used prompt prefixes kept for later prompts that start alike
    (`providers.local.prefix_cache`): their memory is apart from the slots'."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Positions the store holds, all layers' keys and values (0: no prefix cache). For
    # SmolLM2-135M in float32 a position is 45 KiB, so the default is ~360 MiB.
    max_tokens: int = Field(default=8192, ge=0)
    block_tokens: int = Field(default=16, ge=1, le=1024)


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
    # Prompt tokens one engine step prefills, over one or several waiting prompts, beside
    # the running streams' decode: a long prompt is prefilled in chunks of this budget, so
    # it never stalls the streams for its whole prefill.
    prefill_chunk_tokens: int = Field(default=256, ge=1)
    prefix_cache: PrefixCacheSettings = PrefixCacheSettings()
    capabilities: CapabilityOverrides | None = None
