"""`kind: torch`: builds the in-process provider for a configured model. Torch and
transformers are imported only when the model loads (at app start, on a worker thread)."""

from __future__ import annotations

from providers.base import Provider
from providers.capabilities import UNLIMITED_STOP, Capabilities
from providers.local.embeddings import Embedder, LocalEmbedder
from providers.local.packaged import ModelSource, resolve_model, serves_embeddings
from providers.local.provider import LocalGenerator, LocalModel
from providers.timeouts import UpstreamTimeouts
from providers.torch.settings import TorchSettings


def build_torch_provider(name: str, settings: TorchSettings, _: UpstreamTimeouts) -> Provider:
    source = resolve_model(settings.model)
    if serves_embeddings(source):
        return LocalEmbedder(name, lambda: _load_embedder(source, settings))
    # Every option is native; candidates per prompt are bounded by the KV-cache slots.
    capabilities = Capabilities(embeddings=False, max_n=settings.max_slots, max_stop=UNLIMITED_STOP)
    return LocalGenerator(name, lambda: _load_generator(source, settings), capabilities)


def _load_generator(source: ModelSource, settings: TorchSettings) -> LocalModel:
    from providers.local.tokenizer import TokenizerAdapter
    from providers.torch.loading import load_causal_lm
    from providers.torch.runner import TorchRunner
    from providers.torch.sampling import TorchSampler

    loaded = load_causal_lm(source, device=settings.device, dtype=settings.dtype)
    runner = TorchRunner.from_loaded(
        loaded, max_slots=settings.max_slots, max_context=settings.max_context
    )
    return LocalModel(runner, TorchSampler(loaded.device), TokenizerAdapter(loaded.tokenizer))


def _load_embedder(source: ModelSource, settings: TorchSettings) -> Embedder:
    from providers.torch.embedder import TorchEmbedder

    return TorchEmbedder.load(source, device=settings.device)
