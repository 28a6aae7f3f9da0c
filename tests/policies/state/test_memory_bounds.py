"""`MemoryStore` stays bounded: caps evict the oldest entry, expired state is swept."""

from __future__ import annotations

from policies.state.base import BreakerPolicy, BreakerState, Limit, LimitKind
from policies.state.memory import BUDGET_SLACK_S, MemoryStore

T0 = 1_700_000_000.25


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def test_cache_evicts_the_oldest_past_max_entries() -> None:
    store = MemoryStore(max_cache_entries=2)
    await store.cache_set("a", b"1", ttl_s=60)
    await store.cache_set("b", b"2", ttl_s=60)
    await store.cache_set("a", b"3", ttl_s=60)  # refreshed: now the newest

    await store.cache_set("c", b"4", ttl_s=60)

    assert [await store.cache_get(k) for k in "abc"] == [b"3", None, b"4"]


async def test_cache_expiry_reads_the_injected_clock() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    await store.cache_set("k", b"v", ttl_s=10)

    clock.now += 9.9
    assert await store.cache_get("k") == b"v"
    clock.now += 0.1
    assert await store.cache_get("k") is None


async def test_limit_state_evicts_the_oldest_key_past_max_keys() -> None:
    store = MemoryStore(max_keys=2)
    limits = [Limit(f"rpm:key:{i}", LimitKind.RATE, capacity=5, period_s=60.0) for i in range(3)]
    for limit in limits:
        assert (await store.admit([limit], [5], T0)).allowed

    # The first bucket was evicted (it reads full again); the two newest are kept.
    assert [s.remaining for s in await store.peek(limits, T0)] == [5, 0, 0]


async def test_finished_budget_periods_are_swept() -> None:
    store = MemoryStore()
    old = Limit("usd:team:a", LimitKind.BUDGET, capacity=10, period_s=60.0, period_end=T0 + 60)
    await store.admit([old], [10], T0)
    assert (await store.peek([old], T0 + 60 + BUDGET_SLACK_S))[0].remaining == 0

    await store.admit([], [], T0 + 60 + BUDGET_SLACK_S)  # any admit may sweep

    assert (await store.peek([old], T0 + 60 + BUDGET_SLACK_S))[0].remaining == 10


async def test_breakers_evict_the_oldest_and_clean_ones_take_no_room() -> None:
    store = MemoryStore(max_keys=1)
    policy = BreakerPolicy(failures=2)
    await store.breaker_record("a", policy, False, T0)
    await store.breaker_record("b", policy, True, T0)  # clean: nothing stored, nothing evicted
    assert (await store.breaker_record("a", policy, False, T0)).state is BreakerState.OPEN

    await store.breaker_record("b", policy, False, T0)  # stored: evicts "a"
    view = (await store.breaker_views(["a"], policy, T0))["a"]
    assert (view.state, view.consecutive_failures) == (BreakerState.CLOSED, 0)
