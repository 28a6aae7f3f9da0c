"""`slots_held`: the concurrency slots held under a live lease, read without changing
anything (the status page's "in use"), in every store, across replicas and owners."""

from __future__ import annotations

from policies.state.base import Limit, LimitKind, StateStore
from tests.policies.state.conftest import OpenStore

T0 = 1_700_000_000.25
LEASE = 30.0
KEY = Limit("concurrency:key:k", LimitKind.CONCURRENCY, capacity=2, period_s=LEASE)
TEAM = Limit("concurrency:team:t", LimitKind.CONCURRENCY, capacity=3, period_s=LEASE)


async def test_counts_live_slots_per_limit_and_changes_nothing(store: StateStore) -> None:
    assert await store.slots_held([KEY, TEAM], T0) == (0, 0)
    await store.acquire_slots([KEY, TEAM], "r1", T0)
    await store.acquire_slots([TEAM], "r2", T0)
    assert await store.slots_held([KEY, TEAM], T0) == (1, 2)
    assert await store.slots_held([KEY, TEAM], T0) == (1, 2)  # reading took nothing
    await store.release_slots([KEY, TEAM], "r1")
    assert await store.slots_held([TEAM, KEY], T0) == (1, 0)


async def test_a_passed_lease_is_not_counted(store: StateStore) -> None:
    await store.acquire_slots([KEY], "r1", T0)
    await store.acquire_slots([KEY], "r2", T0 + 10)
    assert await store.slots_held([KEY], T0 + LEASE + 1) == (1,)  # r1's lease passed


async def test_replicas_read_the_same_count(open_store: OpenStore) -> None:
    one, other = open_store(), open_store()
    await one.acquire_slots([KEY], "r1", T0)
    assert await other.slots_held([KEY], T0) == (1,)
