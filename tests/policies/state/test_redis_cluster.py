"""What only a Redis Cluster asks of `RedisStore`: one request's limits on three masters
(proven with CLUSTER KEYSLOT and CLUSTER NODES) admitted all or nothing without ever
over-admitting, a refusal in a later slot refunding what earlier slots took, breakers and
the cache spread over the masters, and a master failing over (planned, or killed) in the
middle of traffic: routing fails open, nothing but `StateUnavailable` escapes the store,
and once the replica has taken over the store works again."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from policies.redis_client import RedisAddress
from policies.state.base import (
    BreakerPolicy,
    BreakerState,
    Limit,
    LimitKind,
    StateUnavailable,
)
from policies.state.fail_open import FailOpenStore
from policies.state.redis_keys import StateKeys
from policies.state.redis_store import RedisStore
from tests.redis_cluster import RedisCluster

T0 = 1_700_000_000.25
MINUTE = 60.0
OpenCluster = Callable[[], RedisStore]


@pytest.fixture
async def open_cluster(redis_cluster: RedisCluster) -> AsyncIterator[OpenCluster]:
    """Stores on the cluster sharing one namespace (unique to the test), as replicas do."""
    prefix = f"test:{uuid.uuid4().hex}:"
    opened: list[RedisStore] = []

    def open_one() -> RedisStore:
        address = RedisAddress(url=redis_cluster.url, cluster=True)
        opened.append(RedisStore.from_url(address, prefix=prefix, timeout_s=0.5))
        return opened[-1]

    yield open_one
    for store in opened:
        await store.aclose()


def on_each_master(cluster: RedisCluster, keys: Callable[[int], str]) -> Iterator[int]:
    """Candidates `i` whose key `keys(i)` lands on a master none before it landed on, one
    per master, as the cluster itself says (CLUSTER KEYSLOT, then CLUSTER NODES)."""
    seen: set[int] = set()
    for i in range(1000):
        port = cluster.master_of(cluster.keyslot(keys(i))).port
        if port not in seen:
            seen.add(port)
            yield i
        if len(seen) == len(cluster.masters()):
            return


def spread_limits(cluster: RedisCluster, capacities: tuple[int, int, int]) -> list[Limit]:
    """A key's, a team's and a model's rpm limit, each on its own master."""
    keys = StateKeys()
    scopes = ("key", "team", "model")
    found: list[Limit] = []
    for scope, capacity in zip(scopes, capacities, strict=True):

        def limit(i: int, scope: str = scope, capacity: int = capacity) -> Limit:
            return Limit(f"rpm:{scope}:{scope[0]}{i}", LimitKind.RATE, capacity, MINUTE)

        taken = {cluster.master_of(cluster.keyslot(keys.limit(x))).port for x in found}
        i = next(
            i
            for i in range(1000)
            if cluster.master_of(cluster.keyslot(keys.limit(limit(i)))).port not in taken
        )
        found.append(limit(i))
    ports = {cluster.master_of(cluster.keyslot(keys.limit(x))).port for x in found}
    assert len(ports) == 3, "the three limits must be on three masters"
    return found


async def test_an_rpm_limit_across_three_masters_admits_exactly_n(
    redis_cluster: RedisCluster, open_cluster: OpenCluster
) -> None:
    key, team, model = spread_limits(redis_cluster, (10, 100, 1000))
    replicas = [open_cluster(), open_cluster()]

    admissions = await asyncio.gather(
        *(replicas[i % 2].admit([team, key, model], [1, 1, 1], T0) for i in range(60))
    )

    assert sum(a.allowed for a in admissions) == 10
    assert {a.refused_by for a in admissions if not a.allowed} == {key}
    states = await replicas[0].peek([key, team, model], T0)
    assert [s.remaining for s in states] == [0, 90, 990]


async def test_a_later_slot_that_refuses_gets_the_earlier_reservations_refunded(
    redis_cluster: RedisCluster, open_cluster: OpenCluster
) -> None:
    key, team, model = spread_limits(redis_cluster, (5, 100, 1000))
    store = open_cluster()
    assert (await store.admit([team], [100], T0)).allowed  # the team has nothing left

    # The key's slot is the tightest (5 calls fit), so it runs first and reserves; the
    # team's refuses; the key's reservation is given back. The model's is only checked.
    refused = await store.admit([key, team, model], [1, 1, 1], T0)

    assert not refused.allowed
    assert refused.refused_by == team
    assert [s.remaining for s in refused.states] == [5, 0, 1000]
    assert refused.states[1].retry_after_s == pytest.approx(0.6)
    assert [s.remaining for s in await store.peek([key, team, model], T0)] == [5, 0, 1000]


async def test_slots_across_masters_refund_what_was_taken_not_what_was_renewed(
    redis_cluster: RedisCluster, open_cluster: OpenCluster
) -> None:
    def slots(i: int, scope: str, capacity: int) -> Limit:
        return Limit(f"concurrency:{scope}:{i}", LimitKind.CONCURRENCY, capacity, MINUTE)

    def master(limit: Limit) -> int:
        return redis_cluster.master_of(redis_cluster.keyslot(StateKeys().limit(limit))).port

    key = slots(0, "key", 2)
    team = next(
        slots(i, "team", 3) for i in range(1000) if master(slots(i, "team", 3)) != master(key)
    )
    store = open_cluster()
    assert (await store.acquire_slots([key], "renewed", T0)).allowed
    for holder in ("a", "b", "c"):
        assert (await store.acquire_slots([team], holder, T0)).allowed

    fresh = await store.acquire_slots([key, team], "fresh", T0)
    renewed = await store.acquire_slots([key, team], "renewed", T0)

    assert (fresh.allowed, fresh.refused_by) == (False, team)
    assert (renewed.allowed, renewed.refused_by) == (False, team)
    # "renewed" still holds the key's slot it held before; "fresh" holds none.
    assert (await store.acquire_slots([key], "other", T0)).allowed
    assert not (await store.acquire_slots([key], "one-too-many", T0)).allowed


async def test_breakers_and_cache_across_the_masters(
    redis_cluster: RedisCluster, open_cluster: OpenCluster
) -> None:
    keys = StateKeys()
    names = [f"dep-{i}" for i in on_each_master(redis_cluster, lambda i: keys.breaker(f"dep-{i}"))]
    assert len(names) == 3
    first, second = open_cluster(), open_cluster()
    policy = BreakerPolicy(failures=2, cooldown_s=5.0, failure_rate=0.5, min_calls=100)

    for name in names:
        for _ in range(2):
            await first.breaker_record(name, policy, False, T0)
    views = await second.breaker_views(names, policy, T0 + 1)
    assert [views[n].state for n in names] == [BreakerState.OPEN] * 3

    probe = await second.breaker_acquire(names[0], policy, T0 + 6)
    assert (probe.state, probe.allowed, probe.probe) == (BreakerState.HALF_OPEN, True, True)
    assert not (await first.breaker_acquire(names[0], policy, T0 + 6)).allowed
    closed = await first.breaker_record(names[0], policy, True, T0 + 6.5, probe=True)
    assert closed.state is BreakerState.CLOSED
    views = await second.breaker_views(names, policy, T0 + 7)
    assert [views[n].state for n in names] == [BreakerState.CLOSED] + [BreakerState.HALF_OPEN] * 2

    spread = on_each_master(redis_cluster, lambda i: keys.cache(f"entry-{i}"))
    entries = [f"entry-{i}" for i in spread]
    assert len(entries) == 3
    for entry in entries:
        await first.cache_set(entry, entry.encode(), ttl_s=60)
    assert [await second.cache_get(e) for e in entries] == [e.encode() for e in entries]


async def traffic(store: FailOpenStore, limits: list[Limit], stop: asyncio.Event) -> list[str]:
    """Admissions, breaker and cache calls in a loop until `stop`: what each one met."""
    met: list[str] = []
    policy = BreakerPolicy()
    while not stop.is_set():
        try:
            admission = await store.admit(limits, [1] * len(limits), T0)
            met.append("admitted" if admission.allowed else "refused")
        except StateUnavailable:
            met.append("unavailable")  # the limiter's `limits_when_unavailable` decides
        view = await store.breaker_acquire("dep", policy, T0)  # absorbed: never raises
        assert view.allowed
        await store.cache_get("entry")
        await asyncio.sleep(0.005)
    return met


@pytest.mark.parametrize("how", ["CLUSTER FAILOVER", "kill"])
async def test_a_master_failing_over_mid_traffic(
    redis_cluster: RedisCluster, open_cluster: OpenCluster, how: str
) -> None:
    limits = spread_limits(redis_cluster, (100_000, 100_000, 100_000))
    errors: list[str] = []
    store = FailOpenStore(open_cluster(), errors.append)
    assert (await store.admit(limits, [1, 1, 1], T0)).allowed
    slot = redis_cluster.keyslot(StateKeys().limit(limits[1]))

    stop = asyncio.Event()
    running = asyncio.create_task(traffic(store, limits, stop))
    await asyncio.sleep(0.1)
    fail = redis_cluster.fail_over if how == "CLUSTER FAILOVER" else redis_cluster.kill_master
    old, new = await asyncio.to_thread(fail, slot)
    assert redis_cluster.master_of(slot).port == new != old

    # Once the replica has taken over, the client follows MOVED (or its refreshed map)
    # there, and every operation answers again.
    deadline = time.monotonic() + 10
    while True:
        try:
            recovered = await store.admit(limits, [1, 1, 1], T0)
            break
        except StateUnavailable:
            assert time.monotonic() < deadline, "the store did not recover"
            await asyncio.sleep(0.05)
    stop.set()
    met = await running  # nothing but StateUnavailable escaped the store meanwhile

    assert recovered.allowed
    assert "admitted" in met
    assert "refused" not in met
    if how == "kill":  # failed open while the master was gone, and counted
        assert "unavailable" in met
        assert "admit" in errors
    # A planned failover loses nothing: the counts taken before it are still there.
    if how == "CLUSTER FAILOVER":
        taken = 100_000 - (await store.peek(limits, T0))[1].remaining
        assert taken == 2 + met.count("admitted")
