"""What every upstream call made for one client request cost, however the request ended.

A request may end before its answer (the client went away, one call of a fan-out failed,
best_of ranking failed, a hedge lost) after upstream calls were already made; those calls
were billed by the upstream all the same, so limits and budgets must be charged for them.
`Metered` is stacked directly on the backend and records each call in a `Tally` (one per
attempt at a deployment) of the request's `CallLedger`:

- answered with a usage: that usage, as the upstream reported it;
- answered with an error status, a refused connection, or refused by Turnout's own
  limits: nothing (no upstream bills a call it refused);
- anything else once it was sent (cancelled mid-flight, timed out, broken, answered
  without a usage): the caller's estimate for that call, as it was reserved.

A call still waiting for its turn (`BoundedCalls`) when the request ends was never sent
and is not recorded. Policies price the records (policies/limits.py); this module only
keeps them, so providers stay independent of policies.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from providers.base import Provider
from providers.emulation.wrapper import ProviderWrapper
from providers.errors import Failure, UpstreamError
from providers.types import JSONObject, ProviderRequest, ProviderResponse

# Failures that mean the upstream did no billable work for the call.
_NOT_BILLED = frozenset({Failure.STATUS, Failure.CONNECT, Failure.OWN_LIMIT})


@dataclass(slots=True)
class CallRecord:
    """One upstream call: what was sent, and what is known of its cost."""

    body: Mapping[str, Any]
    usage: Mapping[str, Any] | None = None  # the upstream's own count, once reported
    billed: bool = True  # False: it ended in a way no upstream bills
    # The (prompt, completion) tokens it may have used, as policies estimate them from
    # `body`: worked out once, for the limits and the cost alike (policies/call_cost.py).
    estimate: tuple[int, int] | None = None

    def refused(self, error: BaseException, content: bool = False) -> None:
        """The call ended with `error`; with no content yet, some failures cost nothing."""
        if not content and isinstance(error, UpstreamError) and error.failure in _NOT_BILLED:
            self.billed = False


@dataclass(slots=True)
class Tally:
    """The calls of one attempt at a deployment. `settled`: its tokens are settled
    elsewhere (the attempt answered the client, whose usage the limits settle on)."""

    calls: list[CallRecord] = field(default_factory=list)
    settled: bool = False
    label: str | None = None  # the deployment called, which prices the calls

    def sent(self, request: ProviderRequest) -> CallRecord:
        record = CallRecord(request.body)
        self.calls.append(record)
        return record


@dataclass(slots=True)
class CallLedger:
    """Every attempt of one client request, in the order they started."""

    tallies: list[Tally] = field(default_factory=list)

    def tally(self, label: str | None = None) -> Tally:
        """A new attempt's tally; `label`: the deployment it calls."""
        tally = Tally(label=label)
        self.tallies.append(tally)
        return tally

    def unsettled(self) -> Iterator[CallRecord]:
        """The billed calls whose cost no answer accounts for."""
        for tally in self.tallies:
            if not tally.settled:
                yield from (call for call in tally.calls if call.billed)


class Metered(ProviderWrapper):
    """Records every call to `inner` in `tally` from the moment it is sent."""

    def __init__(self, inner: Provider, tally: Tally) -> None:
        super().__init__(inner)
        self.tally = tally

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        record = self.tally.sent(request)
        try:
            response = await self.inner.complete(request)
        except UpstreamError as exc:
            record.refused(exc)
            raise
        usage = response.body.get("usage")
        record.usage = usage if isinstance(usage, Mapping) else None
        return response

    def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        return self._metered_stream(request)

    async def _metered_stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        record = self.tally.sent(request)
        content = False
        try:
            async with contextlib.aclosing(self.inner.stream(request)) as chunks:
                async for chunk in chunks:
                    usage = _stream_usage(chunk)
                    if usage is not None:  # Anthropic's comes in parts: later counts win
                        record.usage = {**(record.usage or {}), **usage}
                    content = True
                    yield chunk
        except UpstreamError as exc:
            record.refused(exc, content)
            raise


def _stream_usage(chunk: JSONObject) -> Mapping[str, Any] | None:
    """The usage one stream chunk reports: a chat chunk's `usage`; in a native Anthropic
    Messages stream, `message_start`'s (input and cache counts) and `message_delta`'s
    (output so far)."""
    usage = chunk.get("usage")
    if chunk.get("type") == "message_start" and isinstance(chunk.get("message"), Mapping):
        usage = chunk["message"].get("usage")
    return usage if isinstance(usage, Mapping) else None
