"""`kind: jax`: builds the in-process provider for a configured model on JAX, as
`kind: torch` does (`providers.local.factory`). JAX, torch and transformers are imported
only when the model loads (at app start, on a worker thread), and a generator compiles
every step it will run before it reports ready."""

from __future__ import annotations

from functools import partial

from providers.base import Provider
from providers.jax.settings import JaxSettings
from providers.local.embeddings import Embedder
from providers.local.factory import build_local_provider
from providers.local.packaged import ModelSource
from providers.local.provider import LocalModel
from providers.timeouts import UpstreamTimeouts


def build_jax_provider(name: str, settings: JaxSettings, _: UpstreamTimeouts) -> Provider:
    return build_local_provider(
        name,
        settings,
        partial(_load_generator, settings=settings),
        partial(_load_embedder, settings=settings),
    )


def _load_generator(source: ModelSource, *, settings: JaxSettings) -> LocalModel:
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
        prefill_chunk_tokens=settings.prefill_chunk_tokens,
        prefix_cache=settings.prefix_cache,
    )
    sampler = JaxSampler(loaded.device)
    # Compiled now, not in the first requests: a compile freezes every stream for its
    # duration, and /health/ready waits for this.
    runner.compile_ahead()
    sampler.compile_ahead(runner.max_slots, runner.vocab_size)
    return LocalModel(
        runner,
        sampler,
        TokenizerAdapter(loaded.tokenizer),
        prefill_chunk_tokens=settings.prefill_chunk_tokens,
    )


def _load_embedder(source: ModelSource, *, settings: JaxSettings) -> Embedder:
    from providers.jax.embedder import JaxEmbedder

    # float32 whatever `dtype` says, as kind: torch embeds: the model is small.
    return JaxEmbedder.load(source, device=settings.device)
