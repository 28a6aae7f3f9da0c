"""`kind: jax`: builds the in-process provider for a configured model on JAX — a generator
for a causal LM, an embedder for an encoder, decided as `kind: torch` decides
(`serves_embeddings`). JAX, torch and transformers are imported only when the model loads
(at app start, on a worker thread)."""

from __future__ import annotations

from providers.base import Provider
from providers.capabilities import UNLIMITED_STOP, Capabilities
from providers.jax.settings import JaxSettings
from providers.local.embeddings import Embedder, LocalEmbedder
from providers.local.packaged import ModelSource, resolve_model, serves_embeddings
from providers.local.provider import LocalGenerator, LocalModel
from providers.timeouts import UpstreamTimeouts


def build_jax_provider(name: str, settings: JaxSettings, _: UpstreamTimeouts) -> Provider:
    source = resolve_model(settings.model)
    if serves_embeddings(source):
        return LocalEmbedder(name, lambda: _load_embedder(source, settings))
    # Every option is native; candidates per prompt are bounded by the KV-cache slots.
    capabilities = Capabilities(embeddings=False, max_n=settings.max_slots, max_stop=UNLIMITED_STOP)
    return LocalGenerator(name, lambda: _load_generator(source, settings), capabilities)


def _load_generator(source: ModelSource, settings: JaxSettings) -> LocalModel:
    from providers.jax.loading import load_jax_model
    from providers.jax.runner import JaxRunner
    from providers.jax.sampling import JaxSampler
    from providers.local.tokenizer import TokenizerAdapter

    loaded = load_jax_model(
        source, device=settings.device, dtype=settings.dtype, max_context=settings.max_context
    )
    runner = JaxRunner(
        loaded.model,
        loaded.shape,
        max_slots=settings.max_slots,
        max_context=loaded.max_context,
        device=loaded.device,
    )
    sampler = JaxSampler(loaded.device)
    return LocalModel(runner, sampler, TokenizerAdapter(loaded.tokenizer))


def _load_embedder(source: ModelSource, settings: JaxSettings) -> Embedder:
    from providers.jax.embedder import JaxEmbedder

    # float32 whatever `dtype` says, as kind: torch embeds: the model is small.
    return JaxEmbedder.load(source, device=settings.device)
