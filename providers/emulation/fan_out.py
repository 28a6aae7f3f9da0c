"""`n` for a backend without it: n calls with `n: 1`, merged into one answer.

Call i sends `seed + i` when the request has a seed (vLLM's rule for the i-th of n
candidates). Choice `j` of call i becomes index `j * n + i`: for chat j is 0, for a
completions batch j is the prompt index, so choices stay ordered by prompt as OpenAI's are.
Usage is the sum over the calls, prompt tokens included: each call read (and the backend
billed) the whole prompt, so this is what the n calls cost — more than a native `n` would
report, which reads the prompt once. Limits and budgets settle on it, and the client sees
the same count (with `x-turnout-emulated: n` saying why). The calls run at most
`max_parallel` at a time (`BoundedCalls`, stacked below). `best_of` is not handled here:
it is passed through untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

from providers.emulation.interleave import interleave
from providers.emulation.wrapper import (
    ProviderWrapper,
    choice_index,
    chunk_choices,
    include_usage,
)
from providers.types import JSONObject, ProviderRequest, ProviderResponse

T = TypeVar("T")


class FanOutN(ProviderWrapper):
    """Turns a request with n > 1 into n calls with n = 1, whole or streamed."""

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        n = _n(request.body)
        if n <= 1:
            return await self.inner.complete(request)
        calls = [self.inner.complete(r) for r in split_request(request, n)]
        responses = await gather_or_cancel(calls)
        body = dict(responses[0].body)
        body["choices"] = sorted(
            (
                {**choice, "index": choice_index(choice) * n + i}
                for i, response in enumerate(responses)
                for choice in chunk_choices(response.body)
            ),
            key=choice_index,
        )
        body["usage"] = sum_usage(r.body.get("usage") for r in responses)
        return ProviderResponse(body=body, headers=responses[0].headers)

    def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        n = _n(request.body)
        if n <= 1:
            return self.inner.stream(request)
        return self._merged_stream(request, n)

    async def _merged_stream(
        self, request: ProviderRequest, n: int
    ) -> AsyncGenerator[JSONObject, None]:
        merger = _StreamMerger(n, include_usage(request.body))
        # Closing `interleave` (consumer gone, a call failed) closes every inner stream.
        async with contextlib.aclosing(interleave(self.inner, split_request(request, n))) as calls:
            async for i, item in calls:
                if (chunk := merger.rewrite(i, item)) is not None:
                    yield chunk
        if (last := merger.usage_chunk()) is not None:
            yield last


class _StreamMerger:
    """Rewrites the chunks of n streams into one stream's: indices, id, usage."""

    def __init__(self, n: int, with_usage: bool) -> None:
        self.n = n
        self.with_usage = with_usage
        self.head: JSONObject | None = None
        self.usages: dict[int, Any] = {}
        self.roles: set[int] = set()
        self.finished: set[int] = set()

    def rewrite(self, call: int, chunk: JSONObject) -> JSONObject | None:
        if self.head is None:
            self.head = {k: chunk.get(k) for k in ("id", "object", "created", "model")}
        if chunk.get("usage") is not None:
            self.usages[call] = chunk["usage"]
        choices = [c for c in (self._choice(call, c) for c in chunk_choices(chunk)) if c]
        if not choices:
            return None  # a per-call usage chunk, or nothing left to say
        out = {**chunk, "id": self.head["id"], "created": self.head["created"], "choices": choices}
        if self.with_usage:
            out["usage"] = None
        return out

    def _choice(self, call: int, choice: JSONObject) -> JSONObject | None:
        index = choice_index(choice) * self.n + call
        out = {**choice, "index": index}
        delta = choice.get("delta")
        if isinstance(delta, dict) and "role" in delta:
            if index in self.roles:
                out["delta"] = {k: v for k, v in delta.items() if k != "role"}
            self.roles.add(index)
        if out.get("finish_reason"):
            if index in self.finished:
                return None
            self.finished.add(index)
        return out

    def usage_chunk(self) -> JSONObject | None:
        """The merged usage, only if every call reported one: a part is not the whole."""
        if not self.with_usage or len(self.usages) < self.n or self.head is None:
            return None
        usage = sum_usage(self.usages[i] for i in sorted(self.usages))
        return {**self.head, "choices": [], "usage": usage}


def _n(body: Mapping[str, Any]) -> int:
    n = body.get("n")
    return n if isinstance(n, int) else 1


def split_request(request: ProviderRequest, n: int) -> list[ProviderRequest]:
    """n copies with `n: 1`; copy i gets `seed + i` when the request has a seed."""
    seed = request.body.get("seed")
    requests = []
    for i in range(n):
        body = {**request.body, "n": 1}
        if isinstance(seed, int) and not isinstance(seed, bool):
            body["seed"] = seed + i
        requests.append(ProviderRequest(request.endpoint, body))
    return requests


def sum_usage(usages: Iterable[Any]) -> JSONObject | None:
    """The usages of several calls added up, prompt tokens included (each call read its
    prompt), and so are the integer counts in their `*_details` objects; other fields are
    the first call's. None when no call reported a usage."""
    present = [u for u in usages if isinstance(u, Mapping)]
    if not present:
        return None
    summed: JSONObject = dict(present[0])
    for name in ("prompt_tokens", "completion_tokens"):
        summed[name] = sum(_count(u.get(name)) for u in present)
    summed["total_tokens"] = sum(_total(u) for u in present)
    for name, value in present[0].items():
        if name.endswith("_details") and isinstance(value, Mapping):
            summed[name] = _sum_details(name, present)
    return summed


def _sum_details(name: str, usages: Sequence[Mapping[str, Any]]) -> JSONObject:
    details: JSONObject = {}
    for usage in usages:
        part = usage.get(name)
        for key, value in part.items() if isinstance(part, Mapping) else ():
            if isinstance(value, int) and not isinstance(value, bool):
                details[key] = details.get(key, 0) + value
            else:
                details.setdefault(key, value)
    return details


def _total(usage: Mapping[str, Any]) -> int:
    total = usage.get("total_tokens")
    if isinstance(total, int) and not isinstance(total, bool):
        return total
    return _count(usage.get("prompt_tokens")) + _count(usage.get("completion_tokens"))


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


async def gather_or_cancel(calls: Sequence[Awaitable[T]]) -> list[T]:
    """All results, or the first failure with the other calls cancelled."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
