"""A bound on the upstream calls one request's emulations run at once.

An emulation that makes several calls (`n` fanned out, `best_of` candidates, a batch of
prompts as one chat each) gathers them all, but its calls reach the backend through this
wrapper, which is stacked innermost — directly on the backend — and shared by every layer
above it for one request. So however the emulations nest (a batch of prompts, each fanned
out), at most `limit` calls are in flight to the backend; the rest wait their turn. The
slot is taken only where the backend is called: a layer that holds one while waiting for
others could deadlock. A stream holds its slot until it ends or is closed.

The dispatcher passes one semaphore per client request, shared by every attempt at every
deployment (failovers, hedges, stream continuations): `max_parallel` bounds what the
request has in flight upstream, not what each attempt has.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from providers.base import Provider
from providers.emulation.wrapper import ProviderWrapper
from providers.types import JSONObject, ProviderRequest, ProviderResponse


class BoundedCalls(ProviderWrapper):
    """At most `limit` calls to `inner` at a time, whole or streamed (a semaphore: shared
    with whatever else holds it)."""

    def __init__(self, inner: Provider, limit: int | asyncio.Semaphore) -> None:
        super().__init__(inner)
        self._slots = asyncio.Semaphore(limit) if isinstance(limit, int) else limit

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        async with self._slots:
            return await self.inner.complete(request)

    def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        return self._bounded_stream(request)

    async def _bounded_stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        async with self._slots, contextlib.aclosing(self.inner.stream(request)) as chunks:
            async for chunk in chunks:
                yield chunk
