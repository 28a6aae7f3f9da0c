"""`kind: torch`: builds the in-process provider for a configured model. Torch and
transformers are imported only when the model loads (at app start, on a worker thread)."""

from __future__ import annotations

from functools import partial

from providers.base import Provider
from providers.local.embeddings import Embedder
from providers.local.factory import build_local_provider
from providers.local.packaged import ModelSource
from providers.local.provider import LocalModel
from providers.timeouts import UpstreamTimeouts
from providers.torch.settings import TorchSettings


def build_torch_provider(name: str, settings: TorchSettings, _: UpstreamTimeouts) -> Provider:
    return build_local_provider(
        name,
        settings,
        partial(_load_generator, settings=settings),
        partial(_load_embedder, settings=settings),
    )


def _load_generator(source: ModelSource, *, settings: TorchSettings) -> LocalModel:
    from providers.local.tokenizer import TokenizerAdapter
    from providers.torch.loading import load_causal_lm
    from providers.torch.runner import TorchRunner
    from providers.torch.sampling import TorchSampler

    loaded = load_causal_lm(source, device=settings.device, dtype=settings.dtype)
    runner = TorchRunner.from_loaded(
        loaded,
        max_slots=settings.max_slots,
        max_context=settings.max_context,
        prefix_tokens=settings.prefix_cache.max_tokens,
        block_tokens=settings.prefix_cache.block_tokens,
    )
    return LocalModel(
        runner,
        TorchSampler(loaded.device),
        TokenizerAdapter(loaded.tokenizer),
        prefill_chunk_tokens=settings.prefill_chunk_tokens,
    )


def _load_embedder(source: ModelSource, *, settings: TorchSettings) -> Embedder:
    from providers.torch.embedder import TorchEmbedder

    return TorchEmbedder.load(source, device=settings.device)
