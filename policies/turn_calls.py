"""How one deployment's turn makes its upstream calls: each attempt's calls recorded in a
tally of the request's ledger (providers/call_ledger.py), and bounded by the request's
slots; and, before a turn starts, its calls covered by the request's token reservation,
together with those of the turns still running beside it (a hedge's)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from policies.errors import ApiError
from policies.fan_out_cost import UpstreamCalls
from policies.translation import Translation
from providers.base import Provider
from providers.call_ledger import CallLedger, Metered, Tally
from providers.capabilities import Capabilities
from providers.emulation import BoundedCalls, with_emulations
from providers.types import ProviderRequest

T = TypeVar("T")
Cover = Callable[[Sequence[UpstreamCalls]], Awaitable[None]]


async def covered(cover: Cover | None, live: Sequence[UpstreamCalls], calls: UpstreamCalls) -> bool:
    """Whether the request's token reservation covers `calls` together with the turns
    still running (`live`: a hedge runs beside them), topped up first where it must be. A
    hedge the limits have no room for is not started (False); for any other turn the
    refusal is the request's 429."""
    if cover is None or (not live and calls.prompt_reads <= 1):
        return True  # one call, or no more than admission reserved for
    try:
        await cover([*live, calls])
    except ApiError:
        if not live:
            raise
        return False
    return True


def metered_call(
    ledger: CallLedger,
    slots: asyncio.Semaphore,
    turn: tuple[Provider, Translation, Capabilities],
    attempt: Callable[[Provider, ProviderRequest], Awaitable[T]],
    request: ProviderRequest,
    tallies: list[Tally],
    label: str | None = None,
) -> Callable[[], Awaitable[T]]:
    """A turn's call (`turn`: its deployment's provider, translation and capabilities).
    Each attempt records its upstream calls in a tally of its own, appended to `tallies`,
    and they wait for the request's `slots`: innermost, below every emulation, so however
    they nest the request has at most that many calls in flight, hedges and stream
    continuations included. A call still waiting for a slot was never sent. `label`: the
    deployment called, which prices its calls (policies/pricing/)."""
    provider, fit, capabilities = turn

    async def call() -> T:
        tally = ledger.tally(label)
        tallies.append(tally)
        metered: Provider = BoundedCalls(Metered(provider, tally), slots)
        if fit.applied:
            metered = with_emulations(
                metered, fit.applied, capabilities, fit.declared, max_parallel=None
            )
        return await attempt(metered, request)

    return call
