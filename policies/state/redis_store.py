"""`RedisStore`: the `StateStore` that several Turnout replicas share through one Redis, or
through a Redis Cluster.

Every read-then-write is one Lua script (`redis_scripts.py`), so the replicas never
over-admit and all see one breaker per deployment. Keys live under a prefix (default
`turnout:`) so one Redis can serve other tenants, and every key carries a TTL so a Redis
without an eviction policy does not fill up with limits and breakers nobody uses any more.

On a cluster no script touches two hash slots: keys carry hash tags (`redis_keys.py`), and
the limits of one request, which have several owners and so several slots, are admitted
one slot at a time, each step atomic, refunded when a later one refuses
(`redis_admission.py`: never over-admits, may briefly under-admit). On one node the same
calls are one script, one round trip, as before.

redis-py's errors stop here: an outage (no connection, no answer within `timeout_s`, a
read-only replica, a server out of memory or still loading, a cluster failing over) is
raised as `StateUnavailable`; anything else (a script error, a bad reply) is a bug and
stays what it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from policies.redis_client import RedisAddress, RedisClient, connect, reachable, slot_groups
from policies.state import redis_scripts
from policies.state.base import (
    RECENT_CALLS_CAP,
    Admission,
    BreakerPolicy,
    BreakerState,
    BreakerView,
    CallSample,
    Limit,
    LimitState,
    StateUnavailable,
)
from policies.state.memory import BUDGET_SLACK_S, WINDOW_CAP, slot_state
from policies.state.redis_admission import admit_across_slots, each_slot
from policies.state.redis_keys import StateKeys

_Arg = str | int | float
_Slot = tuple[int, bool]  # slots held after a call, and whether the holder held one before

# A breaker, its window and the statistics hashes outlive their last write by this long;
# they are rewritten on every outcome, so only deployments nobody calls any more expire.
STATE_TTL_S = 24 * 3600.0
# Each command waits at most this long for a connection, and again for its answer.
DEFAULT_TIMEOUT_S = 0.5


def _reachable() -> AbstractContextManager[None]:
    return reachable(StateUnavailable)


class RedisStore:
    """Shared state in Redis. Owns `client`: `aclose` closes it."""

    def __init__(self, client: RedisClient, *, prefix: str = "turnout:") -> None:
        self._redis = client
        self._keys = StateKeys(prefix)
        self._limits = client.register_script(redis_scripts.LIMITS)
        self._acquire = client.register_script(redis_scripts.BREAKER_ACQUIRE)
        self._record = client.register_script(redis_scripts.BREAKER_RECORD)
        self._release = client.register_script(redis_scripts.BREAKER_RELEASE)
        self._views = client.register_script(redis_scripts.BREAKER_VIEWS)
        self._observe = client.register_script(redis_scripts.OBSERVE_LATENCY)
        self._add_in_flight = client.register_script(redis_scripts.ADD_IN_FLIGHT)
        self._record_call = client.register_script(redis_scripts.RECORD_CALL)
        self._acquire_slots = client.register_script(redis_scripts.ACQUIRE_SLOTS)
        self._release_slots = client.register_script(redis_scripts.RELEASE_SLOTS)

    @classmethod
    def from_url(
        cls,
        url: str | RedisAddress,
        *,
        prefix: str = "turnout:",
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> RedisStore:
        """E.g. `redis://localhost:6379/0`, or a cluster's `RedisAddress`: see
        `policies.redis_client.connect`."""
        client = connect(url, timeout_s)
        return cls(client, prefix=prefix)

    # --- limits -----------------------------------------------------------------------
    async def admit(
        self,
        limits: Sequence[Limit],
        costs: Sequence[int],
        now: float,
        headroom: Sequence[int] | None = None,
    ) -> Admission:
        refused, states = await self._run_limits("admit", limits, costs, now, headroom)
        if refused:
            return Admission(False, states, limits[refused - 1])
        return Admission(True, states)

    async def charge(self, limits: Sequence[Limit], costs: Sequence[int], now: float) -> None:
        await self._run_limits("charge", limits, costs, now)

    async def peek(self, limits: Sequence[Limit], now: float) -> tuple[LimitState, ...]:
        _, states = await self._run_limits("peek", limits, [0] * len(limits), now)
        return states

    async def _run_limits(
        self,
        mode: str,
        limits: Sequence[Limit],
        costs: Sequence[int],
        now: float,
        headroom: Sequence[int] | None = None,
    ) -> tuple[int, tuple[LimitState, ...]]:
        kept = headroom or [0] * len(limits)
        keys = [self._keys.limit(limit) for limit in limits]
        if len(keys) != len(costs) or len(kept) != len(keys):
            raise ValueError("zip() arguments differ in length: one cost and headroom per limit")

        async def run(group_mode: str, group: Sequence[int], sign: int = 1) -> Any:
            args: list[_Arg] = [group_mode, now, BUDGET_SLACK_S]
            for i in group:
                limit = limits[i]
                cost, free = sign * costs[i], kept[i] if sign > 0 else 0
                args += [limit.kind.value, limit.capacity, limit.period_s, limit.period_end]
                args += [cost, free]
            with _reachable():
                reply = _as_list(await self._limits(keys=[keys[i] for i in group], args=args))
            states = [
                LimitState(limits[i], int(reply[j]), float(reply[j + 1]), float(reply[j + 2]))
                for i, j in zip(group, range(1, len(reply), 3), strict=True)
            ]
            return int(reply[0]), states

        async def refund(group: Sequence[int], _: list[LimitState]) -> list[LimitState]:
            _, states = await run("charge", group, -1)
            return list(states)

        groups = slot_groups(self._redis, keys)
        if len(groups) == 1:  # one node, or one slot: one script, one round trip
            refused, states = await run(mode, groups[0])
        elif mode == "admit":
            room = _room(limits, costs, kept)
            refused, states = await admit_across_slots(groups, run, refund, room, len(limits))
        else:
            refused, states = await each_slot(groups, run, mode, len(limits))
        return refused, tuple(states)

    # --- requests in flight (CONCURRENCY limits) -----------------------------------------
    async def acquire_slots(
        self,
        limits: Sequence[Limit],
        holder: str,
        now: float,
        headroom: Sequence[int] | None = None,
    ) -> Admission:
        if not limits:
            return Admission(True, ())
        kept = headroom or [0] * len(limits)
        keys = [self._keys.limit(limit) for limit in limits]

        async def run(mode: str, group: Sequence[int]) -> tuple[int, list[_Slot]]:
            args: list[_Arg] = [now, holder, int(mode == "admit")]
            for i in group:
                args += [limits[i].capacity, limits[i].period_s, kept[i]]
            with _reachable():
                reply = _as_list(
                    await self._acquire_slots(keys=[keys[i] for i in group], args=args)
                )
            n = len(group)
            held = [int(x) for x in reply[1 : 1 + n]]
            had = [bool(int(x)) for x in reply[1 + n : 1 + 2 * n]]
            return int(reply[0]), list(zip(held, had, strict=True))

        async def refund(group: Sequence[int], slots: list[_Slot]) -> list[_Slot]:
            """Only the slots this call took, not those it renewed; their counts after."""
            fresh = [i for i, (_, had) in zip(group, slots, strict=True) if not had]
            if fresh:
                with _reachable():
                    await self._release_slots(keys=[keys[i] for i in fresh], args=[holder])
            return [(held - (i in fresh), had) for i, (held, had) in zip(group, slots, strict=True)]

        groups = slot_groups(self._redis, keys)
        if len(groups) == 1:
            refused, slots = await run("admit", groups[0])
        else:
            room = _room(limits, [1] * len(limits), kept)
            refused, slots = await admit_across_slots(groups, run, refund, room, len(limits))
        states = tuple(
            slot_state(limit, held, refused > 0)
            for limit, (held, _) in zip(limits, slots, strict=True)
        )
        return Admission(refused == 0, states, limits[refused - 1] if refused else None)

    async def slots_held(self, limits: Sequence[Limit], now: float) -> tuple[int, ...]:
        # One key per command: fine on a cluster, where the keys may sit in several slots.
        keys = [self._keys.limit(limit) for limit in limits]
        with _reachable():
            counts = await asyncio.gather(
                *(self._redis.zcount(k, f"({now!r}", "+inf") for k in keys)
            )
        return tuple(int(c) for c in counts)

    async def release_slots(self, limits: Sequence[Limit], holder: str) -> None:
        if not limits:
            return
        keys = [self._keys.limit(limit) for limit in limits]
        groups = [[keys[i] for i in group] for group in slot_groups(self._redis, keys)]
        with _reachable():
            await asyncio.gather(*(self._release_slots(keys=g, args=[holder]) for g in groups))

    # --- circuit breakers ---------------------------------------------------------------
    async def breaker_acquire(
        self, deployment: str, policy: BreakerPolicy, now: float
    ) -> BreakerView:
        args = [now, policy.probe_timeout_s, STATE_TTL_S]
        with _reachable():
            return _view(await self._acquire(keys=[self._keys.breaker(deployment)], args=args))

    async def breaker_record(
        self,
        deployment: str,
        policy: BreakerPolicy,
        ok: bool,
        now: float,
        retry_after_s: float | None = None,
        probe: bool = False,
    ) -> BreakerView:
        keys = [self._keys.breaker(deployment), self._keys.breaker_window(deployment)]
        args = [
            now,
            int(ok),
            "" if retry_after_s is None else retry_after_s,
            policy.failures,
            policy.cooldown_s,
            "" if policy.failure_rate is None else policy.failure_rate,
            policy.window_s,
            policy.min_calls,
            policy.probe_timeout_s,
            WINDOW_CAP,
            STATE_TTL_S,
            int(probe),
        ]
        with _reachable():
            return _view(await self._record(keys=keys, args=args))

    async def breaker_release(self, deployment: str, now: float) -> None:
        with _reachable():
            await self._release(keys=[self._keys.breaker(deployment)])

    async def breaker_views(
        self, deployments: Sequence[str], policy: BreakerPolicy, now: float
    ) -> Mapping[str, BreakerView]:
        if not deployments:
            return {}
        keys = [self._keys.breaker(d) for d in deployments]
        groups = slot_groups(self._redis, keys)
        args = [now, policy.probe_timeout_s]
        with _reachable():
            replies = await asyncio.gather(
                *(self._views(keys=[keys[i] for i in group], args=args) for group in groups)
            )
        views: dict[str, BreakerView] = {}
        for group, reply in zip(groups, replies, strict=True):
            for i, view in zip(group, _as_list(reply), strict=True):
                views[deployments[i]] = _view(view)
        return {d: views[d] for d in deployments}

    # --- statistics for routing strategies ----------------------------------------------
    async def observe_latency(self, deployment: str, seconds: float, alpha: float) -> None:
        args: list[_Arg] = [deployment, seconds, alpha, STATE_TTL_S]
        with _reachable():
            await self._observe(keys=[self._keys.latency], args=args)

    async def latencies(self, deployments: Sequence[str]) -> Mapping[str, float]:
        if not deployments:
            return {}
        with _reachable():
            values = await self._redis.hmget(self._keys.latency, list(deployments))
        return {d: float(v) for d, v in zip(deployments, values, strict=True) if v is not None}

    async def add_in_flight(self, deployment: str, delta: int) -> None:
        args: list[_Arg] = [deployment, delta, STATE_TTL_S]
        with _reachable():
            await self._add_in_flight(keys=[self._keys.in_flight], args=args)

    async def in_flight(self, deployments: Sequence[str]) -> Mapping[str, int]:
        if not deployments:
            return {}
        with _reachable():
            values = await self._redis.hmget(self._keys.in_flight, list(deployments))
        return {d: int(v or 0) for d, v in zip(deployments, values, strict=True)}

    # --- recent calls: a capped list per deployment, under its breaker's hash tag --------
    async def record_call(
        self,
        deployment: str,
        now: float,
        ok: bool,
        seconds: float | None,
        first_token_s: float | None = None,
    ) -> None:
        entry = f"{now!r},{int(ok)},{_ms(seconds)},{_ms(first_token_s)}"
        args: list[_Arg] = [entry, RECENT_CALLS_CAP, STATE_TTL_S]
        with _reachable():
            await self._record_call(keys=[self._keys.recent_calls(deployment)], args=args)

    async def recent_calls(
        self, deployments: Sequence[str], since: float
    ) -> Mapping[str, Sequence[CallSample]]:
        # One key per command: fine on a cluster, where deployments sit in several slots.
        keys = [self._keys.recent_calls(d) for d in deployments]
        with _reachable():
            lists = await asyncio.gather(*(self._redis.lrange(k, 0, -1) for k in keys))
        found: dict[str, Sequence[CallSample]] = {}
        for deployment, entries in zip(deployments, lists, strict=True):
            samples = (_sample(e) for e in reversed(entries))  # stored newest first
            found[deployment] = [s for s in samples if s.at > since]
        return found

    # --- session pins: one key each, expiring with the pin ------------------------------
    async def session_pin(self, session: str, now: float) -> str | None:
        with _reachable():
            value = await self._redis.get(self._keys.session(session))
        return value.decode() if isinstance(value, bytes) else value

    async def pin_session(self, session: str, deployment: str, now: float, ttl_s: float) -> None:
        name = self._keys.session(session)
        with _reachable():
            await self._redis.set(name, deployment, px=max(1, round(ttl_s * 1000)))

    # --- response cache -----------------------------------------------------------------
    async def cache_get(self, key: str) -> bytes | None:
        with _reachable():
            value = await self._redis.get(self._keys.cache(key))
        if value is None or isinstance(value, bytes):
            return value
        return value.encode()  # only from a client made with decode_responses=True

    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> None:
        name = self._keys.cache(key)
        with _reachable():
            if ttl_s <= 0:
                await self._redis.delete(name)
                return
            await self._redis.set(name, value, px=max(1, round(ttl_s * 1000)))

    # --- life cycle ---------------------------------------------------------------------
    async def ping(self) -> None:
        with _reachable():
            await self._redis.ping()

    async def aclose(self) -> None:
        await self._redis.aclose()


def _room(
    limits: Sequence[Limit], costs: Sequence[int], kept: Sequence[int]
) -> Callable[[int], float]:
    """How many calls of this cost limit i holds: the tightest slot is admitted first."""
    return lambda i: (limits[i].capacity - kept[i]) / max(1, costs[i])


def _ms(seconds: float | None) -> str:
    """Milliseconds to the microsecond, compact ('' for none): 256 of them per deployment."""
    return "" if seconds is None else f"{seconds * 1000:.3f}"


def _sample(entry: bytes | str) -> CallSample:
    at, ok, ms, ttft_ms = (entry.decode() if isinstance(entry, bytes) else entry).split(",")
    return CallSample(
        float(at),
        ok == "1",
        float(ms) / 1000 if ms else None,
        float(ttft_ms) / 1000 if ttft_ms else None,
    )


def _as_list(reply: Any) -> list[Any]:
    """A script's reply is untyped; the scripts here all return arrays."""
    if not isinstance(reply, list):
        raise TypeError(f"unexpected reply from a Redis script: {reply!r}")
    return reply


def _view(reply: Any) -> BreakerView:
    state, allowed, probe, open_until, failures = _as_list(reply)
    return BreakerView(
        state=BreakerState(state.decode() if isinstance(state, bytes) else state),
        allowed=bool(allowed),
        probe=bool(probe),
        open_until=float(open_until),
        consecutive_failures=int(failures),
    )
