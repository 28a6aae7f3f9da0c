"""The packaged models, loaded once per test session (loading costs seconds; the first
ever load of SmolLM2 also converts its GGUF file into the model cache)."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from providers.torch.embedder import TorchEmbedder
    from providers.torch.loading import LoadedModel


@functools.cache
def smollm2() -> LoadedModel:
    """SmolLM2-135M-Instruct on the CPU in float32."""
    from providers.torch.loading import load_causal_lm

    return load_causal_lm("smollm2-135m-instruct", device="cpu", dtype="float32")


@functools.cache
def minilm() -> TorchEmbedder:
    """all-MiniLM-L6-v2 on the CPU."""
    from providers.torch.embedder import TorchEmbedder

    return TorchEmbedder.load("all-minilm-l6-v2", device="cpu")
