"""`MemoryStore`: the shared state of one Turnout process, kept in dicts.

Atomic without locks: every operation runs from its read to its write with no `await` in
between, so no other coroutine on the event loop can interleave. Every dict is bounded: a
bucket that has refilled, a budget whose period is over, a breaker back to a clean closed
state and an in-flight count back at 0 are dropped, and a hard cap evicts the oldest entry
of any dict past it, so a flood of distinct keys cannot grow the process without limit.

The arithmetic mirrors `redis_scripts.py` line for line; the same tests run against both.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from policies.state.base import (
    RECENT_CALLS_CAP,
    Admission,
    BreakerPolicy,
    BreakerState,
    BreakerView,
    CallSample,
    Limit,
    LimitKind,
    LimitState,
)

# Continuous refill is float arithmetic, and a wall-clock float today is only good to about
# 0.24 µs: 0.1 s at 10 tokens/s must still count as one whole token. So room is compared
# with this much slack: a microsecond of refill, plus a hair for plain rounding.
EPSILON = 1e-9
CLOCK_RESOLUTION_S = 1e-6
# Outcomes kept per breaker for the failure-rate rule; past this many, the window is the
# most recent calls rather than the full `window_s` (plenty for any sensible `min_calls`).
WINDOW_CAP = 1024
# A finished budget period is kept this long after its end for late `charge` calls.
BUDGET_SLACK_S = 60.0
# How often (in the callers' clock) expired buckets and budgets are swept out.
SWEEP_EVERY_S = 60.0

K = TypeVar("K")
V = TypeVar("V")


def _bound(entries: dict[K, V], max_entries: int) -> None:
    """Evict the oldest-inserted entries past `max_entries` (dicts keep insertion order)."""
    while len(entries) > max_entries:
        del entries[next(iter(entries))]


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float  # the time `tokens` was true at; never moves backwards
    full_at: float  # when it will have refilled, so the sweep can drop it


@dataclass(slots=True)
class _Breaker:
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0  # consecutive
    open_until: float = 0.0
    probe_since: float | None = None
    window: deque[tuple[float, bool]] = field(default_factory=deque)
    window_failures: int = 0


def _rate(limit: Limit) -> float:
    """Tokens per second; 0 for a degenerate limit (never refills, never divides by 0)."""
    if limit.period_s <= 0 or limit.capacity <= 0:
        return 0.0
    return limit.capacity / limit.period_s


def _slack(limit: Limit) -> float:
    return EPSILON + _rate(limit) * CLOCK_RESOLUTION_S


def limit_state(limit: Limit, room: float, now: float, cost: int | None = None) -> LimitState:
    """What a limit with `room` left reports; with `cost`, also when that cost would fit."""
    slack = _slack(limit)
    remaining = max(0, math.floor(room + slack))
    short = cost is not None and cost > room + slack
    retry_after = 0.0
    if limit.kind is LimitKind.BUDGET:
        reset = max(0.0, limit.period_end - now)
        if short:
            retry_after = reset
        return LimitState(limit, remaining, reset, retry_after)
    rate = _rate(limit)
    reset = max(0.0, (limit.capacity - room) / rate) if rate > 0 else 0.0
    if cost is not None and short:
        # A cost above capacity never fits; the best advice is "when the bucket is full".
        needed = min(cost, limit.capacity) - room
        retry_after = max(0.0, needed / rate) if rate > 0 else limit.period_s
    return LimitState(limit, remaining, reset, retry_after)


def slot_state(limit: Limit, held: int, refused: bool) -> LimitState:
    """A CONCURRENCY limit with `held` slots taken: none refills on a clock, so a refused
    request is told to try again in a second."""
    return LimitState(limit, max(0, limit.capacity - held), 0.0, 1.0 if refused else 0.0)


def breaker_view(breaker: _Breaker | None, policy: BreakerPolicy, now: float) -> BreakerView:
    """The read-only view: an open breaker past its cooldown, or a half-open one whose probe
    went stale, reads as half-open and allowed (the next acquirer gets the probe)."""
    if breaker is None:
        return BreakerView(BreakerState.CLOSED, allowed=True)
    failures, open_until = breaker.failures, breaker.open_until
    if breaker.state is BreakerState.CLOSED:
        return BreakerView(BreakerState.CLOSED, True, consecutive_failures=failures)
    if breaker.state is BreakerState.OPEN and now < open_until:
        return BreakerView(BreakerState.OPEN, False, False, open_until, failures)
    free = (
        breaker.state is BreakerState.OPEN
        or breaker.probe_since is None
        or now >= breaker.probe_since + policy.probe_timeout_s
    )
    return BreakerView(BreakerState.HALF_OPEN, free, False, open_until, failures)


class MemoryStore:
    """The default `StateStore`: nothing to set up, shared by nothing but this process.

    `clock` only ages cache entries (the cache API takes no `now`); tests inject one.
    """

    def __init__(
        self,
        *,
        max_keys: int = 100_000,
        max_cache_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max_keys = max_keys
        self._max_cache_entries = max_cache_entries
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._budgets: dict[tuple[str, float], int] = {}  # (key, period_end) -> used
        self._breakers: dict[str, _Breaker] = {}
        self._latency: dict[str, float] = {}
        self._in_flight: dict[str, int] = {}
        self._calls: dict[str, deque[CallSample]] = {}  # deployment -> its last calls
        self._slots: dict[str, dict[str, float]] = {}  # limit key -> {holder: lease end}
        self._cache: dict[str, tuple[float, bytes]] = {}  # key -> (expires_at, value)
        self._pins: dict[str, tuple[float, str]] = {}  # session -> (expires_at, deployment)
        self._next_sweep = -math.inf

    # --- limits -----------------------------------------------------------------------
    async def admit(
        self,
        limits: Sequence[Limit],
        costs: Sequence[int],
        now: float,
        headroom: Sequence[int] | None = None,
    ) -> Admission:
        pairs = list(zip(limits, costs, strict=True))
        # What must fit: the cost and the headroom left for others above it.
        needs = [c + h for c, h in zip(costs, headroom or [0] * len(pairs), strict=True)]
        self._sweep(now)
        rooms = [self._room(limit, now) for limit in limits]
        refused = next(
            (
                limit
                for limit, need, room in zip(limits, needs, rooms, strict=True)
                if need > room + _slack(limit)
            ),
            None,
        )
        if refused is not None:
            states = tuple(
                limit_state(limit, room, now, need)
                for limit, need, room in zip(limits, needs, rooms, strict=True)
            )
            return Admission(False, states, refused)
        rooms = [
            self._take(limit, cost, room, now)
            for (limit, cost), room in zip(pairs, rooms, strict=True)
        ]
        return Admission(
            True,
            tuple(limit_state(lim, room, now) for lim, room in zip(limits, rooms, strict=True)),
        )

    async def charge(self, limits: Sequence[Limit], costs: Sequence[int], now: float) -> None:
        pairs = list(zip(limits, costs, strict=True))
        self._sweep(now)
        for limit, cost in pairs:
            self._take(limit, cost, self._room(limit, now), now)

    async def peek(self, limits: Sequence[Limit], now: float) -> tuple[LimitState, ...]:
        return tuple(limit_state(limit, self._room(limit, now), now) for limit in limits)

    def _room(self, limit: Limit, now: float) -> float:
        if limit.kind is LimitKind.BUDGET:
            return limit.capacity - self._budgets.get((limit.key, limit.period_end), 0)
        bucket = self._buckets.get(limit.key)
        if bucket is None:
            return float(limit.capacity)
        refill = max(0.0, now - bucket.updated) * _rate(limit)
        return min(float(limit.capacity), bucket.tokens + refill)

    def _take(self, limit: Limit, cost: int, room: float, now: float) -> float:
        """Take `cost` from `room` (give back when negative, never above capacity)."""
        left = min(float(limit.capacity), room - cost)
        if limit.kind is LimitKind.BUDGET:
            self._budgets[(limit.key, limit.period_end)] = round(limit.capacity - left)
            _bound(self._budgets, self._max_keys)
            return left
        previous = self._buckets.pop(limit.key, None)
        updated = now if previous is None else max(previous.updated, now)
        rate = _rate(limit)
        full_at = updated + (limit.capacity - left) / rate if rate > 0 else math.inf
        self._buckets[limit.key] = _Bucket(left, updated, full_at)
        _bound(self._buckets, self._max_keys)
        return left

    def _sweep(self, now: float) -> None:
        """Drop buckets that have refilled and budgets whose period is over (both read the
        same as absent), at most once a minute of the callers' clock."""
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_EVERY_S
        for key in [k for k, b in self._buckets.items() if b.full_at <= now]:
            del self._buckets[key]
        for budget in [b for b in self._budgets if b[1] + BUDGET_SLACK_S <= now]:
            del self._budgets[budget]

    # --- requests in flight (CONCURRENCY limits) -----------------------------------------
    async def acquire_slots(
        self,
        limits: Sequence[Limit],
        holder: str,
        now: float,
        headroom: Sequence[int] | None = None,
    ) -> Admission:
        held = [self._live_slots(limit.key, now) for limit in limits]
        kept = headroom or [0] * len(limits)
        refused = next(
            (
                limit
                for limit, slots, free in zip(limits, held, kept, strict=True)
                if holder not in slots and len(slots) + free >= limit.capacity
            ),
            None,
        )
        for limit, slots in zip(limits, held, strict=True):
            if refused is None:
                slots[holder] = now + limit.period_s
            if slots:
                self._slots[limit.key] = slots
        _bound(self._slots, self._max_keys)
        states = tuple(
            slot_state(limit, len(slots), refused is not None)
            for limit, slots in zip(limits, held, strict=True)
        )
        return Admission(refused is None, states, refused)

    async def release_slots(self, limits: Sequence[Limit], holder: str) -> None:
        for limit in limits:
            slots = self._slots.get(limit.key)
            if slots is not None:
                slots.pop(holder, None)
                if not slots:
                    del self._slots[limit.key]

    async def slots_held(self, limits: Sequence[Limit], now: float) -> tuple[int, ...]:
        return tuple(
            sum(end > now for end in self._slots.get(limit.key, {}).values()) for limit in limits
        )

    def _live_slots(self, key: str, now: float) -> dict[str, float]:
        """The holders of `key` whose lease has not passed (a dead replica's are dropped)."""
        slots = self._slots.pop(key, {})  # re-inserted by the caller: the newest last
        return {holder: end for holder, end in slots.items() if end > now}

    # --- circuit breakers ---------------------------------------------------------------
    async def breaker_acquire(
        self, deployment: str, policy: BreakerPolicy, now: float
    ) -> BreakerView:
        breaker = self._breakers.get(deployment)
        view = breaker_view(breaker, policy, now)
        if breaker is None or view.state is not BreakerState.HALF_OPEN or not view.allowed:
            return view
        breaker.state, breaker.probe_since = BreakerState.HALF_OPEN, now
        return BreakerView(BreakerState.HALF_OPEN, True, True, view.open_until, breaker.failures)

    async def breaker_record(
        self,
        deployment: str,
        policy: BreakerPolicy,
        ok: bool,
        now: float,
        retry_after_s: float | None = None,
        probe: bool = False,
    ) -> BreakerView:
        breaker = self._breakers.pop(deployment, None) or _Breaker()
        if breaker.state is BreakerState.HALF_OPEN:
            # Only the probe's outcome moves it; any other is a late one, from a call sent
            # before the breaker opened, and changes nothing.
            if probe and ok:
                return breaker_view(None, policy, now)  # closed, counts reset: nothing to keep
            if probe:
                breaker.failures += 1
                _open(breaker, policy, now, retry_after_s)
        elif breaker.state is BreakerState.OPEN:
            # A late outcome of a call sent before the breaker opened: it may lengthen the
            # open period (a 429's Retry-After) but never closes the breaker; only the probe does.
            if not ok:
                breaker.failures += 1
                if retry_after_s is not None:
                    breaker.open_until = max(breaker.open_until, now + retry_after_s)
        else:
            breaker.failures = 0 if ok else breaker.failures + 1
            if policy.failure_rate is not None:
                _push_outcome(breaker, policy, ok, now)
            if not ok and (breaker.failures >= policy.failures or _rate_tripped(breaker, policy)):
                _open(breaker, policy, now, retry_after_s)
        if breaker.state is not BreakerState.CLOSED or breaker.failures or breaker.window:
            self._breakers[deployment] = breaker
            _bound(self._breakers, self._max_keys)
        return breaker_view(self._breakers.get(deployment), policy, now)

    async def breaker_release(self, deployment: str, now: float) -> None:
        breaker = self._breakers.get(deployment)
        if breaker is not None and breaker.state is BreakerState.HALF_OPEN:
            breaker.probe_since = None

    async def breaker_views(
        self, deployments: Sequence[str], policy: BreakerPolicy, now: float
    ) -> Mapping[str, BreakerView]:
        return {d: breaker_view(self._breakers.get(d), policy, now) for d in deployments}

    # --- statistics for routing strategies ----------------------------------------------
    async def observe_latency(self, deployment: str, seconds: float, alpha: float) -> None:
        previous = self._latency.pop(deployment, None)
        value = seconds if previous is None else alpha * seconds + (1 - alpha) * previous
        self._latency[deployment] = value
        _bound(self._latency, self._max_keys)

    async def latencies(self, deployments: Sequence[str]) -> Mapping[str, float]:
        return {d: self._latency[d] for d in deployments if d in self._latency}

    async def add_in_flight(self, deployment: str, delta: int) -> None:
        count = self._in_flight.pop(deployment, 0) + delta
        if count > 0:  # an unmatched -1 must not make a deployment look idler than idle
            self._in_flight[deployment] = count
            _bound(self._in_flight, self._max_keys)

    async def in_flight(self, deployments: Sequence[str]) -> Mapping[str, int]:
        return {d: self._in_flight.get(d, 0) for d in deployments}

    # --- recent calls -------------------------------------------------------------------
    async def record_call(
        self,
        deployment: str,
        now: float,
        ok: bool,
        seconds: float | None,
        first_token_s: float | None = None,
    ) -> None:
        calls = self._calls.pop(deployment, None)  # re-inserted last: the newest touched
        if calls is None:
            calls = deque(maxlen=RECENT_CALLS_CAP)
        calls.append(CallSample(now, ok, seconds, first_token_s))
        self._calls[deployment] = calls
        _bound(self._calls, self._max_keys)

    async def recent_calls(
        self, deployments: Sequence[str], since: float
    ) -> Mapping[str, Sequence[CallSample]]:
        return {d: [c for c in self._calls.get(d, ()) if c.at > since] for d in deployments}

    # --- session pins -------------------------------------------------------------------
    async def session_pin(self, session: str, now: float) -> str | None:
        pin = self._pins.get(session)
        if pin is None:
            return None
        if pin[0] <= now:
            del self._pins[session]
            return None
        return pin[1]

    async def pin_session(self, session: str, deployment: str, now: float, ttl_s: float) -> None:
        self._pins.pop(session, None)  # re-inserted last: the oldest pins are evicted first
        self._pins[session] = (now + ttl_s, deployment)
        _bound(self._pins, self._max_keys)

    # --- response cache -----------------------------------------------------------------
    async def cache_get(self, key: str) -> bytes | None:
        entry = self._cache.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._cache[key]
            return None
        return entry[1]

    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> None:
        self._cache.pop(key, None)  # re-inserted last: a refreshed entry is the newest
        if ttl_s > 0:
            self._cache[key] = (self._clock() + ttl_s, value)
            _bound(self._cache, self._max_cache_entries)

    # --- life cycle ---------------------------------------------------------------------
    async def ping(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def _open(
    breaker: _Breaker, policy: BreakerPolicy, now: float, retry_after_s: float | None
) -> None:
    breaker.state = BreakerState.OPEN
    breaker.open_until = now + max(policy.cooldown_s, retry_after_s or 0.0)
    breaker.probe_since = None


def _push_outcome(breaker: _Breaker, policy: BreakerPolicy, ok: bool, now: float) -> None:
    """Append to the sliding window, dropping outcomes older than `window_s` (and past
    `WINDOW_CAP`) while keeping the failure count in step."""
    window = breaker.window
    window.append((now, ok))
    breaker.window_failures += not ok
    cutoff = now - policy.window_s
    while window and (window[0][0] <= cutoff or len(window) > WINDOW_CAP):
        breaker.window_failures -= not window.popleft()[1]


def _rate_tripped(breaker: _Breaker, policy: BreakerPolicy) -> bool:
    calls = len(breaker.window)
    return (
        policy.failure_rate is not None
        and calls >= max(1, policy.min_calls)
        and breaker.window_failures / calls >= policy.failure_rate
    )
