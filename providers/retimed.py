"""A deployment called with its model's own timeouts (`timeouts:` on a model).

Providers are built once, with the top-level (or their own) timeouts, and shared by every
model they serve; a model's overrides therefore travel with each call, on the
`ProviderRequest`, and HTTP adapters apply them. This wrapper stamps them on every request
that reaches the deployment, those an emulation builds included, so no emulation has to
carry them along."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import replace

from providers.base import Provider
from providers.emulation.wrapper import ProviderWrapper
from providers.timeouts import TimeoutOverrides
from providers.types import JSONObject, ProviderRequest, ProviderResponse


class Retimed(ProviderWrapper):
    def __init__(self, inner: Provider, timeouts: TimeoutOverrides) -> None:
        super().__init__(inner)
        self.timeouts = timeouts

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        return await self.inner.complete(replace(request, timeouts=self.timeouts))

    def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        return self.inner.stream(replace(request, timeouts=self.timeouts))
