"""Several streamed calls read concurrently, their chunks yielded as they arrive."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from providers.base import Provider
from providers.types import JSONObject, ProviderRequest

_END = object()  # a call's stream ended


async def interleave(
    inner: Provider, requests: Sequence[ProviderRequest]
) -> AsyncGenerator[tuple[int, JSONObject], None]:
    """(call number, chunk) pairs from `inner.stream` of every request, in arrival order.

    The first failure is raised; closing the generator (or a failure) closes every stream.
    """
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue(maxsize=len(requests))
    pumps = [
        asyncio.create_task(_pump(inner, request, call, queue))
        for call, request in enumerate(requests)
    ]
    try:
        ended = 0
        while ended < len(requests):
            call, item = await queue.get()
            if item is _END:
                ended += 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield call, item
    finally:
        for pump in pumps:
            pump.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


async def _pump(
    inner: Provider, request: ProviderRequest, call: int, queue: asyncio.Queue[tuple[int, Any]]
) -> None:
    try:
        async with contextlib.aclosing(inner.stream(request)) as chunks:
            async for chunk in chunks:
                await queue.put((call, chunk))
    except Exception as exc:  # handed to the consumer, which raises it
        await queue.put((call, exc))
        return
    await queue.put((call, _END))
