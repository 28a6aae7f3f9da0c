"""Provider kinds: adding a backend kind is one folder and one entry here."""

from __future__ import annotations

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


KINDS = MappingProxyType(
    {
        "openai": ProviderKind(OpenAISettings, OpenAIProvider),
        "anthropic": ProviderKind(AnthropicSettings, AnthropicProvider),
        "torch": ProviderKind(TorchSettings, build_torch_provider),
        "jax": ProviderKind(JaxSettings, build_jax_provider),
    }
)

# The config's `providers.<name>` value: one settings model per kind, chosen by `kind`.
ProviderSettings = Annotated[
    OpenAISettings | AnthropicSettings | TorchSettings | JaxSettings,
    Field(discriminator="kind"),
]


def build_provider(name: str, settings: BaseModel, timeouts: UpstreamTimeouts) -> Provider:
    kind = KINDS[getattr(settings, "kind")]  # noqa: B009 - every settings model has `kind`
    return kind.factory(name, settings, timeouts)
