"""The one interface the policy layer keeps its shared state behind.

Two implementations: `MemoryStore` (one process, nothing to set up; the default) and
`RedisStore` (several Turnout replicas share breakers, limits, statistics and cache).
Every operation that reads and then writes is atomic in both: in memory because it runs
with no await between the read and the write; in Redis because it is one Lua script.

Time is always passed in (`now`, seconds on the wall clock) rather than read by the store,
so tests can drive breakers and limits with an injected clock, and so every replica uses
the same notion of time for the same key.

A store that cannot be reached raises `StateUnavailable` from any operation, never its
client library's errors; what the policy layer does then is `fail_open.py`'s to decide.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

# Finished calls kept per deployment for the status page (`record_call`): enough for a
# p95 of the last minutes of a quiet deployment, a few seconds of a busy one; bounded so
# the page's read and the store's memory stay small whatever the traffic.
RECENT_CALLS_CAP = 256


class StateUnavailable(Exception):
    """The store could not be reached, or did not answer in time. Not a bug: an outage."""


class LimitKind(StrEnum):
    RATE = "rate"  # a token bucket: `capacity` per `period_s`, refilled continuously
    BUDGET = "budget"  # a fixed calendar period: `capacity` per period, reset at its end
    # Requests in flight: `capacity` slots, each held by one request until it is released
    # or its lease (`period_s`) runs out, so a replica that died holding slots gives them back.
    CONCURRENCY = "concurrency"


@dataclass(frozen=True, slots=True)
class Limit:
    """One limit to check and charge, e.g. team `research`'s requests per minute."""

    key: str  # e.g. "rpm:team:research"; the store prefixes its own namespace
    kind: LimitKind
    capacity: int
    period_s: float  # RATE: refill period; BUDGET: period length
    period_end: float = 0.0  # BUDGET only: when the current period ends (wall clock)


@dataclass(frozen=True, slots=True)
class LimitState:
    """A limit after a check: what is left and when it is whole again (or resets)."""

    limit: Limit
    remaining: int
    reset_s: float  # seconds until `remaining` is back to `capacity` (BUDGET: period end)
    retry_after_s: float = 0.0  # when refused: seconds until the refused cost would fit


@dataclass(frozen=True, slots=True)
class Admission:
    allowed: bool
    states: tuple[LimitState, ...]  # one per limit, in the order given
    refused_by: Limit | None = None  # the first limit that did not have room


@dataclass(frozen=True, slots=True)
class CallSample:
    """One finished upstream call, as the status page reads it back (`recent_calls`):
    when it ended, whether its breaker counted it a success, its latency (None: a health
    check's, which says nothing about serving) and its time to first token (streams)."""

    at: float
    ok: bool
    seconds: float | None = None
    first_token_s: float | None = None


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failures: int = 3  # consecutive failures that open the breaker
    cooldown_s: float = 5.0  # open this long before one probe is let through
    failure_rate: float | None = None  # also open when this share of calls in `window_s` failed
    window_s: float = 30.0
    min_calls: int = 10  # ... among at least this many calls
    probe_timeout_s: float = 60.0  # a half-open probe not reported by then frees its slot


@dataclass(frozen=True, slots=True)
class BreakerView:
    state: BreakerState
    allowed: bool  # may a call go to this deployment now?
    probe: bool = False  # this call is the one half-open probe
    open_until: float = 0.0  # when an open breaker will let a probe through
    consecutive_failures: int = 0


class StateStore(Protocol):
    # --- limits -----------------------------------------------------------------------
    async def admit(
        self,
        limits: Sequence[Limit],
        costs: Sequence[int],
        now: float,
        headroom: Sequence[int] | None = None,
    ) -> Admission:
        """All or nothing: if every limit has room for its cost, take them all; otherwise
        take none and say which limit refused first. Never over-admits under concurrency.
        `headroom` (one per limit; None: all 0): what must still be left after the cost,
        kept for others (a batch line leaves it to live requests); a refused state's
        `retry_after_s` is when cost and headroom would both fit."""

    async def charge(self, limits: Sequence[Limit], costs: Sequence[int], now: float) -> None:
        """Take (or, with a negative cost, give back) without checking: the true token
        count once a response is known, after `admit` reserved an estimate. May go below 0."""

    async def peek(self, limits: Sequence[Limit], now: float) -> tuple[LimitState, ...]:
        """Each limit's state without changing it (for explain and headers)."""

    # --- requests in flight (CONCURRENCY limits) -----------------------------------------
    async def acquire_slots(
        self,
        limits: Sequence[Limit],
        holder: str,
        now: float,
        headroom: Sequence[int] | None = None,
    ) -> Admission:
        """All or nothing: a slot of each limit for `holder` (one request), held until
        `release_slots` or until its lease (`now + limit.period_s`) passes; leases that have
        passed are dropped first. A holder that holds a slot already has its lease renewed.
        Each state's `remaining` is the slots left (`retry_after_s` 1 when refused).
        `headroom` (one per limit; None: all 0): slots that must stay free after this one."""

    async def release_slots(self, limits: Sequence[Limit], holder: str) -> None:
        """Give back `holder`'s slots (one it does not hold: nothing happens)."""

    async def slots_held(self, limits: Sequence[Limit], now: float) -> tuple[int, ...]:
        """How many slots of each limit are held under a live lease, without changing
        anything (for the status page)."""

    # --- circuit breakers ---------------------------------------------------------------
    async def breaker_acquire(
        self, deployment: str, policy: BreakerPolicy, now: float
    ) -> BreakerView:
        """May a call go to `deployment`? Closed: yes. Open before its cooldown: no. Open
        after it: the breaker half-opens and this caller (only this one) gets the probe.
        Half-open with a probe out: no (until `breaker_release`, the probe's outcome, or
        `probe_timeout_s` frees the slot)."""

    async def breaker_record(
        self,
        deployment: str,
        policy: BreakerPolicy,
        ok: bool,
        now: float,
        retry_after_s: float | None = None,
        probe: bool = False,
    ) -> BreakerView:
        """The outcome of a call. Closed: failures past the threshold (or rate) open it,
        a success resets the consecutive count. Half-open: only the probe's outcome
        (`probe`, as `breaker_acquire` granted it) counts: success closes the breaker and
        resets counts, failure re-opens it with the cooldown restarted. Any other outcome
        while half-open or open is a late one, from a call sent before the breaker opened:
        it never closes the breaker, though a failure may lengthen an open one. The open
        period is the longer of the cooldown and `retry_after_s` (a 429's Retry-After)."""

    async def breaker_release(self, deployment: str, now: float) -> None:
        """Give back a probe that will report no outcome (its call was cancelled, or never
        made): the breaker stays half-open and the next acquirer gets the probe. Does
        nothing to a breaker that is not half-open."""

    async def breaker_views(
        self, deployments: Sequence[str], policy: BreakerPolicy, now: float
    ) -> Mapping[str, BreakerView]:
        """Read-only state of each, for explain and metrics (an open breaker past its
        cooldown reads as half-open, allowed)."""

    # --- statistics for routing strategies ----------------------------------------------
    async def observe_latency(self, deployment: str, seconds: float, alpha: float) -> None:
        """Fold one latency sample into the deployment's EWMA (weight `alpha` on the new)."""

    async def latencies(self, deployments: Sequence[str]) -> Mapping[str, float]:
        """EWMA latency of each deployment that has one (others are absent)."""

    async def add_in_flight(self, deployment: str, delta: int) -> None:
        """+1 when a call to `deployment` starts, -1 when it ends."""

    async def in_flight(self, deployments: Sequence[str]) -> Mapping[str, int]:
        """Calls in flight to each (0 when none), summed over every replica sharing the store."""

    # --- recent calls (the status page's success rate, percentiles and chart) ----------
    async def record_call(
        self,
        deployment: str,
        now: float,
        ok: bool,
        seconds: float | None,
        first_token_s: float | None = None,
    ) -> None:
        """Keep one finished call to `deployment`; only the last `RECENT_CALLS_CAP` per
        deployment are kept (written off the request's path: policies/deferred.py)."""

    async def recent_calls(
        self, deployments: Sequence[str], since: float
    ) -> Mapping[str, Sequence[CallSample]]:
        """Each deployment's kept calls that ended after `since`, oldest first, from every
        replica sharing the store (a deployment with none: an empty sequence)."""

    # --- session pins (`strategy: affinity`) -----------------------------------------
    async def session_pin(self, session: str, now: float) -> str | None:
        """The deployment `session` (a hash, never the client's id) is pinned to, if any."""

    async def pin_session(self, session: str, deployment: str, now: float, ttl_s: float) -> None:
        """Pin `session` to `deployment` until `now + ttl_s` (a later pin replaces it)."""

    # --- response cache -----------------------------------------------------------------
    async def cache_get(self, key: str) -> bytes | None: ...

    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    # --- life cycle ---------------------------------------------------------------------
    async def ping(self) -> None:
        """Raise `StateUnavailable` if the store cannot be reached (start-up check)."""

    async def aclose(self) -> None: ...
