"""`FailOpenStore`: what routing does while the shared store cannot be reached.

It keeps routing (fails open): a router that stops serving because its bookkeeping is
down turns one outage into two. Wrapped around a store that can be unreachable (Redis),
each `StateUnavailable` is counted (`on_error`, for metrics) and logged at most once per
`LOG_EVERY_S`, then:

- answered here where a neutral answer exists: breakers read as closed and outcomes go
  unrecorded (every deployment is tried; nothing opens); statistics writes are skipped; a
  cache read misses and a write is skipped; a session pin reads as none and is not kept;
  a token correction is dropped, and so is a slot's release (its lease runs out instead),
  and a finished call is not kept for the status page (`record_call`);
- raised to the caller where the fallback is the caller's decision: `admit` and
  `acquire_slots` (the limits policy, `state.limits_when_unavailable`), `peek` (explain
  says the state is unknown), `latencies` and `in_flight` (the strategy falls back to config
  order), `slots_held` and `recent_calls` (the status page shows them unknown).

`ping` is passed through, neither counted nor logged here: it is the start-up check, which
still fails readiness when the store is unreachable at start (most likely a wrong URL).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TypeVar

import structlog

from policies.state.base import (
    Admission,
    BreakerPolicy,
    BreakerState,
    BreakerView,
    CallSample,
    Limit,
    LimitState,
    StateStore,
    StateUnavailable,
)

T = TypeVar("T")
OnError = Callable[[str], None]  # the operation that found the store unreachable
LOG_EVERY_S = 5.0
CLOSED = BreakerView(BreakerState.CLOSED, allowed=True)

log = structlog.get_logger("turnout.state")


class FailOpenStore:
    """A `StateStore` that routing can keep using while `store` is unreachable."""

    def __init__(
        self,
        store: StateStore,
        on_error: OnError | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._on_error = on_error
        self._clock = clock
        self._next_log = -float("inf")
        self._suppressed = 0  # errors not logged since the last warning
        self._warned = False  # a warning went out and no call has succeeded since

    # --- limits: the caller decides -----------------------------------------------------
    async def admit(
        self,
        limits: Sequence[Limit],
        costs: Sequence[int],
        now: float,
        headroom: Sequence[int] | None = None,
    ) -> Admission:
        return await self._raised("admit", self._store.admit(limits, costs, now, headroom))

    async def charge(self, limits: Sequence[Limit], costs: Sequence[int], now: float) -> None:
        await self._absorbed("charge", self._store.charge(limits, costs, now), None)

    async def peek(self, limits: Sequence[Limit], now: float) -> tuple[LimitState, ...]:
        return await self._raised("peek", self._store.peek(limits, now))

    async def acquire_slots(
        self,
        limits: Sequence[Limit],
        holder: str,
        now: float,
        headroom: Sequence[int] | None = None,
    ) -> Admission:
        work = self._store.acquire_slots(limits, holder, now, headroom)
        return await self._raised("acquire_slots", work)

    async def slots_held(self, limits: Sequence[Limit], now: float) -> tuple[int, ...]:
        return await self._raised("slots_held", self._store.slots_held(limits, now))

    async def release_slots(self, limits: Sequence[Limit], holder: str) -> None:
        # Dropped: the slot's lease gives it back once the store is reachable again.
        await self._absorbed("release_slots", self._store.release_slots(limits, holder), None)

    # --- circuit breakers: closed ---------------------------------------------------------
    async def breaker_acquire(
        self, deployment: str, policy: BreakerPolicy, now: float
    ) -> BreakerView:
        work = self._store.breaker_acquire(deployment, policy, now)
        return await self._absorbed("breaker_acquire", work, CLOSED)

    async def breaker_record(
        self,
        deployment: str,
        policy: BreakerPolicy,
        ok: bool,
        now: float,
        retry_after_s: float | None = None,
        probe: bool = False,
    ) -> BreakerView:
        work = self._store.breaker_record(deployment, policy, ok, now, retry_after_s, probe)
        return await self._absorbed("breaker_record", work, CLOSED)

    async def breaker_release(self, deployment: str, now: float) -> None:
        await self._absorbed("breaker_release", self._store.breaker_release(deployment, now), None)

    async def breaker_views(
        self, deployments: Sequence[str], policy: BreakerPolicy, now: float
    ) -> Mapping[str, BreakerView]:
        work = self._store.breaker_views(deployments, policy, now)
        return await self._absorbed("breaker_views", work, dict.fromkeys(deployments, CLOSED))

    # --- statistics: writes skipped, reads left to the strategy -------------------------
    async def observe_latency(self, deployment: str, seconds: float, alpha: float) -> None:
        work = self._store.observe_latency(deployment, seconds, alpha)
        await self._absorbed("observe_latency", work, None)

    async def latencies(self, deployments: Sequence[str]) -> Mapping[str, float]:
        return await self._raised("latencies", self._store.latencies(deployments))

    async def add_in_flight(self, deployment: str, delta: int) -> None:
        await self._absorbed("add_in_flight", self._store.add_in_flight(deployment, delta), None)

    async def in_flight(self, deployments: Sequence[str]) -> Mapping[str, int]:
        return await self._raised("in_flight", self._store.in_flight(deployments))

    # --- recent calls: a write skipped, the read left to the status page (unknown) ---------
    async def record_call(
        self,
        deployment: str,
        now: float,
        ok: bool,
        seconds: float | None,
        first_token_s: float | None = None,
    ) -> None:
        work = self._store.record_call(deployment, now, ok, seconds, first_token_s)
        await self._absorbed("record_call", work, None)

    async def recent_calls(
        self, deployments: Sequence[str], since: float
    ) -> Mapping[str, Sequence[CallSample]]:
        return await self._raised("recent_calls", self._store.recent_calls(deployments, since))

    # --- session pins: none (the prefix record still routes the session) ------------------
    async def session_pin(self, session: str, now: float) -> str | None:
        return await self._absorbed("session_pin", self._store.session_pin(session, now), None)

    async def pin_session(self, session: str, deployment: str, now: float, ttl_s: float) -> None:
        work = self._store.pin_session(session, deployment, now, ttl_s)
        await self._absorbed("pin_session", work, None)

    # --- response cache: a miss -----------------------------------------------------------
    async def cache_get(self, key: str) -> bytes | None:
        return await self._absorbed("cache_get", self._store.cache_get(key), None)

    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> None:
        await self._absorbed("cache_set", self._store.cache_set(key, value, ttl_s), None)

    # --- life cycle -----------------------------------------------------------------------
    async def ping(self) -> None:
        await self._store.ping()  # start-up reports its own failure

    async def aclose(self) -> None:
        await self._store.aclose()

    # --- the two ways an outage is met ----------------------------------------------------
    async def _absorbed(self, operation: str, work: Awaitable[T], fallback: T) -> T:
        try:
            result = await work
        except StateUnavailable as exc:
            self._unavailable(operation, exc)
            return fallback
        if self._warned:
            self._recovered()
        return result

    async def _raised(self, operation: str, work: Awaitable[T]) -> T:
        try:
            result = await work
        except StateUnavailable as exc:
            self._unavailable(operation, exc)
            raise
        if self._warned:
            self._recovered()
        return result

    def _unavailable(self, operation: str, error: StateUnavailable) -> None:
        """Count every error; log one warning per `LOG_EVERY_S`, however many calls fail
        (every request makes several), with how many went unlogged before it."""
        if self._on_error is not None:
            self._on_error(operation)
        now = self._clock()
        if now < self._next_log:
            self._suppressed += 1
            return
        self._next_log = now + LOG_EVERY_S
        log.warning(
            "state_store_unavailable",
            operation=operation,
            error=str(error),
            unlogged_since_last=self._suppressed,
            policy="fail open: breakers closed, statistics and cache skipped",
        )
        self._suppressed, self._warned = 0, True

    def _recovered(self) -> None:
        self._warned = False
        log.info("state_store_available")
