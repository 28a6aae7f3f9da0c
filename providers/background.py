"""A deployment called for background work (a batch line), which yields to live requests.

Like `Retimed`, this wrapper stamps `background` on every request that reaches the
deployment, those an emulation builds (fan-out, best_of, fake streaming...) included, so
no emulation has to carry the flag along. A backend with a queue of its own reads it:
the local samplers serve a background request after every live one waiting there."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import replace

from providers.emulation.wrapper import ProviderWrapper
from providers.types import JSONObject, ProviderRequest, ProviderResponse


class InBackground(ProviderWrapper):
    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        return await self.inner.complete(replace(request, background=True))

    def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        return self.inner.stream(replace(request, background=True))
