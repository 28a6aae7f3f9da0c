"""Provider kinds: adding a backend kind is one folder and one entry here."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any

from pydantic import BaseModel, Field

from providers.anthropic.adapter import AnthropicProvider
from providers.anthropic.settings import AnthropicSettings
from providers.base import Provider
from providers.jax.factory import build_jax_provider
from providers.jax.settings import JaxSettings
from providers.local.remote import RemoteSampler
from providers.openai.adapter import OpenAIProvider
from providers.openai.settings import OpenAISettings
from providers.timeouts import UpstreamTimeouts
from providers.torch.factory import build_torch_provider
from providers.torch.settings import TorchSettings

Factory = Callable[[str, Any, UpstreamTimeouts], Provider]


@dataclass(frozen=True, slots=True)
class ProviderKind:
    settings: type[BaseModel]
    factory: Factory
    # Loads a model into the process that serves it: with several worker processes, one
    # sampler host serves it to them all (providers/local/host.py).
    in_process: bool = False


KINDS = MappingProxyType(
    {
        "openai": ProviderKind(OpenAISettings, OpenAIProvider),
        "anthropic": ProviderKind(AnthropicSettings, AnthropicProvider),
        "torch": ProviderKind(TorchSettings, build_torch_provider, in_process=True),
        "jax": ProviderKind(JaxSettings, build_jax_provider, in_process=True),
    }
)

# The config's `providers.<name>` value: one settings model per kind, chosen by `kind`.
ProviderSettings = Annotated[
    OpenAISettings | AnthropicSettings | TorchSettings | JaxSettings,
    Field(discriminator="kind"),
]


def build_provider(
    name: str,
    settings: BaseModel,
    timeouts: UpstreamTimeouts,
    sampler_host: str | None = None,
) -> Provider:
    """`sampler_host`: the socket of the process that serves the in-process kinds to this
    one (several workers); such a provider is then a `RemoteSampler` standing in for it."""
    kind = _kind(settings)
    provider = kind.factory(name, settings, timeouts)
    if sampler_host is not None and kind.in_process:
        return RemoteSampler.standing_in_for(provider, sampler_host, fingerprint(settings))
    return provider


def runs_in_process(settings: BaseModel) -> bool:
    return _kind(settings).in_process


def fingerprint(settings: BaseModel) -> str:
    """What a provider was built from, as the sampler host and its workers compare it."""
    return hashlib.sha256(settings.model_dump_json().encode()).hexdigest()


def _kind(settings: BaseModel) -> ProviderKind:
    return KINDS[getattr(settings, "kind")]  # noqa: B009 - every settings model has `kind`
