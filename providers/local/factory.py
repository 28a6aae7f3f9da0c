"""What `kind: torch` and `kind: jax` build alike: from a configured model, an embedder for
an encoder (`serves_embeddings`) or a generator for a causal LM, each loaded by the
framework's loader at app start, on a worker thread. The frameworks supply the loaders."""

from __future__ import annotations

from collections.abc import Callable

from providers.base import Provider
from providers.capabilities import UNLIMITED_STOP, Capabilities
from providers.local.embeddings import Embedder, LocalEmbedder
from providers.local.packaged import ModelSource, resolve_model, serves_embeddings
from providers.local.provider import LocalGenerator, LocalModel
from providers.local.settings import LocalModelSettings


def build_local_provider(
    name: str,
    settings: LocalModelSettings,
    load_generator: Callable[[ModelSource], LocalModel],
    load_embedder: Callable[[ModelSource], Embedder],
) -> Provider:
    source = resolve_model(settings.model)
    if serves_embeddings(source):
        return LocalEmbedder(name, lambda: load_embedder(source))
    # Sampling options are native; candidates per prompt are bounded by the KV-cache slots.
    # The chat options of OpenAI's own service (reasoning effort, audio, web search, prompt
    # caching, stored completions, moderation, custom tools, ...) have nothing behind them.
    # A final assistant message is continued (`continue_final_message`, as vLLM does it).
    capabilities = Capabilities(
        embeddings=False, max_n=settings.max_slots, max_stop=UNLIMITED_STOP, prefill=True
    ).without_chat_options()
    return LocalGenerator(name, lambda: load_generator(source), capabilities)
