"""Hedged first byte: a stream whose first content is late gets a second deployment too.

A stream's deployment is called as usual; if no content has come `delay` seconds later,
the plan's next eligible deployment (the one failover would try next: it can honour the
request, its breaker lets calls through, the team may use it) is called as well, without
stopping the first. The first of them to produce content is relayed; the others are
cancelled at once, their connections closed, and their attempts recorded as `hedge_lost`:
losing is no failure, so no breaker hears of it. A call that fails before content fails
as it would without hedging (the plan moves on once no call is left running); it does not
stop the others. At most `max` hedges per request, each `delay` after the last call
started. A hedge is paid for: the dispatcher tops the request's token reservation up for
its calls beside the running ones before it starts (no room: no hedge), its calls share
the request's `max_parallel` slots, and a loser's calls are charged (providers/
call_ledger.py).

`delay` is the configured `after`, or with `after: auto` (the default)
`clamp(factor * p95 time to first token, floor, cap)` of the deployment last called:
3 * p95 within [2 s, 30 s], 30 s for a deployment with no statistics yet. So a silent
upstream (accepts, never answers) with a healthy fallback is answered after at most 30 s
plus the fallback's own time to first token, rather than after `first_byte` (120 s); and
a deployment that is normally slow (p95 of 20 s) is hedged only on calls slower than
30 s, not on every call.

The p95 is estimated from two exponentially weighted moving averages kept in the shared
store beside the strategies' latency: the mean time to first token and its mean absolute
deviation, as TCP estimates its round-trip time (RFC 6298: weights 1/8 and 1/4); p95 ~
mean + 2 * deviation (for a normal distribution, 1.645 sigma ~ 2.06 mean deviations). A
hedged call that lost is folded in with the time it ran, a lower bound of its own time to
first token: a deployment that became slower is then hedged later and later, until it
wins again and is measured, rather than hedged on every call for good.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any, Generic, TypeVar

from policies.deferred import Deferred
from policies.fan_out_cost import ONE_CALL, UpstreamCalls
from policies.plan import Target
from policies.policy_config import HedgeSettings
from policies.retry import CANCELLED, Attempt
from policies.state.base import StateStore, StateUnavailable
from policies.translation import Translation
from providers.call_ledger import Tally
from providers.errors import UpstreamError

T = TypeVar("T")

MEAN_WEIGHT = 0.125  # RFC 6298's alpha, for SRTT
DEVIATION_WEIGHT = 0.25  # RFC 6298's beta, for RTTVAR
P95_DEVIATIONS = 2.0

HEDGE_LOST = "hedge_lost"  # the attempt outcome of a call cancelled because another won


class FirstTokenStats:
    """Each deployment's time to first token in streams, kept in the shared store under
    `<label>#ttft` and `<label>#ttft-dev` with the store's EWMA (`observe_latency`)."""

    def __init__(self, store: StateStore, deferred: Deferred) -> None:
        self._store = store
        self._deferred = deferred

    async def p95(self, label: str) -> float | None:
        """The estimated p95, None while unmeasured (or while the store is unreachable)."""
        mean_key, deviation_key = _keys(label)
        try:
            got = await self._store.latencies([mean_key, deviation_key])
        except StateUnavailable:
            return None
        mean = got.get(mean_key)
        if mean is None:
            return None
        return mean + P95_DEVIATIONS * got.get(deviation_key, mean / 2)

    async def observe(self, label: str, seconds: float) -> None:
        """Fold in one time to first token (off the request's path where the store is shared)."""
        await self._deferred.run(self._observe(label, seconds))

    async def _observe(self, label: str, seconds: float) -> None:
        mean_key, deviation_key = _keys(label)
        try:
            mean = (await self._store.latencies([mean_key])).get(mean_key)
        except StateUnavailable:
            return
        # The first sample's deviation is half of it, as RFC 6298 starts RTTVAR.
        deviation = seconds / 2 if mean is None else abs(seconds - mean)
        await self._store.observe_latency(deviation_key, deviation, DEVIATION_WEIGHT)
        await self._store.observe_latency(mean_key, seconds, MEAN_WEIGHT)


def _keys(label: str) -> tuple[str, str]:
    return f"{label}#ttft", f"{label}#ttft-dev"


@dataclass(frozen=True, slots=True, eq=False)
class Turn(Generic[T]):
    """One deployment's turn in a plan, ready to run: admitted by its breaker (`probe`: as
    its half-open probe), its call built for the request. `calls`: the upstream calls
    each attempt makes; `tallies`: what each attempt's calls cost, in order."""

    target: Target
    fit: Translation
    call: Callable[[], Awaitable[T]]
    probe: bool
    calls: UpstreamCalls = ONE_CALL
    tallies: list[Tally] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Steps(Generic[T]):
    """What a hedged walk asks of the dispatcher.

    `next_turn`: the next eligible deployment, None when the plan has none left. `run`: a
    turn's call, its retries and bookkeeping. `failed`: a turn ended in `error`; raises
    when that ends the request (an error for the client). `lost`: a turn lost the race,
    after running for the given seconds (or the request ended without it), with its
    result if it had one, to be closed.
    `delay`: seconds to give a turn before hedging."""

    next_turn: Callable[[], Awaitable[Turn[T] | None]]
    run: Callable[[Turn[T]], Coroutine[Any, Any, T]]
    failed: Callable[[Turn[T], UpstreamError], Awaitable[None]]
    lost: Callable[[Turn[T], T | None, float], Awaitable[None]]
    delay: Callable[[Turn[T]], Awaitable[float]]


@dataclass(slots=True)
class _Running(Generic[T]):
    turn: Turn[T]
    hedge: bool  # started as a hedge, not as the plan's first call or a failover
    started: float


class HedgedWalk(Generic[T]):
    """One request's way through its plan, hedging late first content (see the module).
    `outcomes` gets one entry per hedge started: won, lost, failed or cancelled."""

    def __init__(self, steps: Steps[T], settings: HedgeSettings, outcomes: list[str]) -> None:
        self._steps = steps
        self._hedges_left = settings.max
        self._outcomes = outcomes
        self._running: dict[asyncio.Task[T], _Running[T]] = {}
        self._hedge_at: float | None = None
        self._loop = asyncio.get_running_loop()

    async def run(self) -> tuple[Turn[T], T] | None:
        """The turn that produced content first and its result; None when every eligible
        deployment failed. Raises what `failed` raises."""
        try:
            if not await self._launch(hedge=False):
                return None
            while self._running:
                done, _ = await asyncio.wait(
                    self._running, timeout=self._wait(), return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    self._hedge_at = None
                    self._hedges_left -= 1
                    await self._launch(hedge=True)
                    continue
                won = await self._settle(done)
                if won is not None:
                    await self._cancel_others(won)
                    return won
                if not self._running and not await self._launch(hedge=False):
                    return None  # failover found no deployment left
            return None
        finally:
            await self._cancel_others(None)

    def _wait(self) -> float | None:
        if self._hedge_at is None:
            return None
        return max(0.0, self._hedge_at - self._loop.time())

    async def _launch(self, *, hedge: bool) -> bool:
        turn = await self._steps.next_turn()
        if turn is None:
            return False
        task = self._loop.create_task(self._steps.run(turn))
        self._running[task] = _Running(turn, hedge, self._loop.time())
        if self._hedges_left > 0:
            self._hedge_at = self._loop.time() + await self._steps.delay(turn)
        return True

    async def _settle(self, done: set[asyncio.Task[T]]) -> tuple[Turn[T], T] | None:
        """Take the finished calls, in the order they started: the first with content wins
        (another that also has content is closed as a loser); failures go to `failed`
        unless one won."""
        finished = [(task, self._running.pop(task)) for task in list(self._running) if task in done]
        won: tuple[Turn[T], T] | None = None
        failures: list[tuple[_Running[T], UpstreamError]] = []
        for task, running in finished:
            error = task.exception()
            if error is None:
                if won is None:
                    won = (running.turn, task.result())
                    self._note(running, "won")
                else:
                    await self._lose(running, task.result())
            elif isinstance(error, UpstreamError):
                self._note(running, "failed")
                failures.append((running, error))
            else:
                raise error  # a bug, not an upstream's failure
        if won is None:
            for running, error in failures:
                await self._steps.failed(running.turn, error)
        return won

    async def _cancel_others(self, won: tuple[Turn[T], T] | None) -> None:
        """Cancel every call still running and wait for each to end (its connection
        closed). After a win they lost; otherwise the request ended (deadline, client
        gone, an error for the client) and they were cancelled with it."""
        if not self._running:
            return
        running, self._running = self._running, {}
        for task in running:
            task.cancel()
        await asyncio.wait(running)
        for task, call in running.items():
            if not task.cancelled() and task.exception() is not None:
                self._note(call, "failed")  # it failed before it could be cancelled
                continue
            # Content that came just as another won (or the request ended) is closed too.
            result = None if task.cancelled() else task.result()
            if won is not None:
                await self._lose(call, result)
                continue
            self._note(call, "cancelled")
            if result is not None:
                await self._steps.lost(call.turn, result, self._loop.time() - call.started)

    async def _lose(self, running: _Running[T], result: T | None) -> None:
        self._note(running, "lost")
        await self._steps.lost(running.turn, result, self._loop.time() - running.started)

    def _note(self, running: _Running[T], outcome: str) -> None:
        if running.hedge:
            self._outcomes.append(outcome)


def mark_lost(attempts: list[Attempt], label: str) -> None:
    """The call to `label` cancelled because another won: its attempt says so (the last
    one cancelled, as the call's retries come in order)."""
    for i in range(len(attempts) - 1, -1, -1):
        if attempts[i].deployment == label and attempts[i].outcome == CANCELLED:
            attempts[i] = replace(attempts[i], outcome=HEDGE_LOST)
            return
