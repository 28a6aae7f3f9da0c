"""`RedisStore`: the `StateStore` that several Turnout replicas share through one Redis.

Every read-then-write is one Lua script (`redis_scripts.py`), so the replicas never
over-admit and all see one breaker per deployment. Keys live under a prefix (default
`turnout:`) so one Redis can serve other tenants, and every key carries a TTL so a Redis
without an eviction policy does not fill up with limits and breakers nobody uses any more.
Redis Cluster is not supported: one `admit` touches several keys in one script.

redis-py's errors stop here: an outage (no connection, no answer within `timeout_s`, a
read-only replica, a server out of memory or still loading) is raised as `StateUnavailable`;
anything else (a script error, a bad reply) is a bug and stays what it is.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

from redis.asyncio import Redis

from policies.redis_client import connect, reachable
from policies.state import redis_scripts
from policies.state.base import (
    Admission,
    BreakerPolicy,
    BreakerState,
    BreakerView,
    Limit,
    LimitKind,
    LimitState,
    StateUnavailable,
)
from policies.state.memory import BUDGET_SLACK_S, WINDOW_CAP, slot_state

_Arg = str | int | float

# A breaker, its window and the statistics hashes outlive their last write by this long;
# they are rewritten on every outcome, so only deployments nobody calls any more expire.
STATE_TTL_S = 24 * 3600.0
# Each command waits at most this long for a connection, and again for its answer.
DEFAULT_TIMEOUT_S = 0.5


def _reachable() -> AbstractContextManager[None]:
    return reachable(StateUnavailable)


class RedisStore:
    """Shared state in Redis. Owns `client`: `aclose` closes it."""

    def __init__(self, client: Redis, *, prefix: str = "turnout:") -> None:
        self._redis = client
        self._prefix = prefix
        self._limits = client.register_script(redis_scripts.LIMITS)
        self._acquire = client.register_script(redis_scripts.BREAKER_ACQUIRE)
        self._record = client.register_script(redis_scripts.BREAKER_RECORD)
        self._release = client.register_script(redis_scripts.BREAKER_RELEASE)
        self._views = client.register_script(redis_scripts.BREAKER_VIEWS)
        self._observe = client.register_script(redis_scripts.OBSERVE_LATENCY)
        self._add_in_flight = client.register_script(redis_scripts.ADD_IN_FLIGHT)
        self._acquire_slots = client.register_script(redis_scripts.ACQUIRE_SLOTS)
        self._release_slots = client.register_script(redis_scripts.RELEASE_SLOTS)

    @classmethod
    def from_url(
        cls, url: str, *, prefix: str = "turnout:", timeout_s: float = DEFAULT_TIMEOUT_S
    ) -> RedisStore:
        """E.g. `redis://localhost:6379/0`: see `policies.redis_client.connect`."""
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
        args: list[_Arg] = [mode, now, BUDGET_SLACK_S]
        kept = headroom or [0] * len(limits)
        for limit, cost, free in zip(limits, costs, kept, strict=True):
            args += [limit.kind.value, limit.capacity, limit.period_s, limit.period_end, cost, free]
        with _reachable():
            reply = await self._limits(keys=[self._limit_key(x) for x in limits], args=args)
        reply = _as_list(reply)
        states = tuple(
            LimitState(limit, int(reply[i]), float(reply[i + 1]), float(reply[i + 2]))
            for limit, i in zip(limits, range(1, len(reply), 3), strict=True)
        )
        return int(reply[0]), states

    def _limit_key(self, limit: Limit) -> str:
        if limit.kind is LimitKind.BUDGET:
            # One counter per period: a new period starts from nothing, the old one expires.
            return f"{self._prefix}budget:{limit.key}:{limit.period_end:.3f}"
        return f"{self._prefix}rate:{limit.key}"

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
        args: list[_Arg] = [now, holder]
        for limit, free in zip(limits, headroom or [0] * len(limits), strict=True):
            args += [limit.capacity, limit.period_s, free]
        keys = [self._slots_key(limit) for limit in limits]
        with _reachable():
            reply = _as_list(await self._acquire_slots(keys=keys, args=args))
        refused = int(reply[0])
        states = tuple(
            slot_state(limit, int(held), refused > 0)
            for limit, held in zip(limits, reply[1:], strict=True)
        )
        return Admission(refused == 0, states, limits[refused - 1] if refused else None)

    async def release_slots(self, limits: Sequence[Limit], holder: str) -> None:
        if not limits:
            return
        with _reachable():
            await self._release_slots(keys=[self._slots_key(x) for x in limits], args=[holder])

    def _slots_key(self, limit: Limit) -> str:
        return f"{self._prefix}slots:{limit.key}"

    # --- circuit breakers ---------------------------------------------------------------
    async def breaker_acquire(
        self, deployment: str, policy: BreakerPolicy, now: float
    ) -> BreakerView:
        args = [now, policy.probe_timeout_s, STATE_TTL_S]
        with _reachable():
            return _view(await self._acquire(keys=[self._breaker_key(deployment)], args=args))

    async def breaker_record(
        self,
        deployment: str,
        policy: BreakerPolicy,
        ok: bool,
        now: float,
        retry_after_s: float | None = None,
        probe: bool = False,
    ) -> BreakerView:
        key = self._breaker_key(deployment)
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
            return _view(await self._record(keys=[key, f"{key}:window"], args=args))

    async def breaker_release(self, deployment: str, now: float) -> None:
        with _reachable():
            await self._release(keys=[self._breaker_key(deployment)])

    async def breaker_views(
        self, deployments: Sequence[str], policy: BreakerPolicy, now: float
    ) -> Mapping[str, BreakerView]:
        if not deployments:
            return {}
        keys = [self._breaker_key(d) for d in deployments]
        with _reachable():
            reply = _as_list(await self._views(keys=keys, args=[now, policy.probe_timeout_s]))
        return {d: _view(v) for d, v in zip(deployments, reply, strict=True)}

    def _breaker_key(self, deployment: str) -> str:
        return f"{self._prefix}breaker:{deployment}"

    # --- statistics for routing strategies ----------------------------------------------
    async def observe_latency(self, deployment: str, seconds: float, alpha: float) -> None:
        args: list[_Arg] = [deployment, seconds, alpha, STATE_TTL_S]
        with _reachable():
            await self._observe(keys=[f"{self._prefix}latency"], args=args)

    async def latencies(self, deployments: Sequence[str]) -> Mapping[str, float]:
        if not deployments:
            return {}
        with _reachable():
            values = await self._redis.hmget(f"{self._prefix}latency", list(deployments))
        return {d: float(v) for d, v in zip(deployments, values, strict=True) if v is not None}

    async def add_in_flight(self, deployment: str, delta: int) -> None:
        args: list[_Arg] = [deployment, delta, STATE_TTL_S]
        with _reachable():
            await self._add_in_flight(keys=[f"{self._prefix}in_flight"], args=args)

    async def in_flight(self, deployments: Sequence[str]) -> Mapping[str, int]:
        if not deployments:
            return {}
        with _reachable():
            values = await self._redis.hmget(f"{self._prefix}in_flight", list(deployments))
        return {d: int(v or 0) for d, v in zip(deployments, values, strict=True)}

    # --- response cache -----------------------------------------------------------------
    async def cache_get(self, key: str) -> bytes | None:
        with _reachable():
            value = await self._redis.get(f"{self._prefix}cache:{key}")
        if value is None or isinstance(value, bytes):
            return value
        return value.encode()  # only from a client made with decode_responses=True

    async def cache_set(self, key: str, value: bytes, ttl_s: float) -> None:
        name = f"{self._prefix}cache:{key}"
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
