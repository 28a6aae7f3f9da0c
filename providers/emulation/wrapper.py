"""The base of every emulation: a `Provider` that delegates everything to an inner one."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping
from typing import Any

from providers.base import Provider
from providers.types import Endpoint, JSONObject, ProviderRequest, ProviderResponse


class ProviderWrapper(Provider):
    """Delegates to `inner`; an emulation overrides only the call it changes."""

    def __init__(self, inner: Provider) -> None:
        super().__init__(inner.name)
        self.inner = inner

    @property
    def endpoints(self) -> frozenset[Endpoint]:
        return self.inner.endpoints

    async def start(self) -> None:
        await self.inner.start()

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        return await self.inner.complete(request)

    def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        return self.inner.stream(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def include_usage(body: Mapping[str, Any]) -> bool:
    """Whether a streamed request asked for the final usage chunk."""
    options = body.get("stream_options")
    return isinstance(options, Mapping) and options.get("include_usage") is True


def choice_index(choice: Mapping[str, Any]) -> int:
    index = choice.get("index", 0)
    return index if isinstance(index, int) else 0


def chunk_choices(chunk: Mapping[str, Any]) -> list[JSONObject]:
    """The choice objects of a response or chunk (malformed entries skipped)."""
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        return []
    return [c for c in choices if isinstance(c, dict)]
