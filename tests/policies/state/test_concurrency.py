"""Concurrency slots in both stores: all-or-nothing, released by holder, renewed by the
same holder, a lease that passes gives its slot back (a replica that died), and no
over-admission under concurrency across two replicas."""

from __future__ import annotations

import asyncio

from policies.state.base import Limit, LimitKind, StateStore
from tests.policies.state.conftest import OpenStore

T0 = 1_700_000_000.25
LEASE = 30.0
KEY = Limit("concurrency:key:k", LimitKind.CONCURRENCY, capacity=2, period_s=LEASE)
TEAM = Limit("concurrency:team:t", LimitKind.CONCURRENCY, capacity=3, period_s=LEASE)


async def test_slots_refuse_past_capacity_until_one_is_released(store: StateStore) -> None:
    first = await store.acquire_slots([KEY], "r1", T0)
    assert first.allowed
    assert first.states[0].remaining == 1
    assert (await store.acquire_slots([KEY], "r2", T0)).allowed

    refused = await store.acquire_slots([KEY], "r3", T0)

    assert not refused.allowed
    assert refused.refused_by == KEY
    assert (refused.states[0].remaining, refused.states[0].retry_after_s) == (0, 1.0)
    await store.release_slots([KEY], "r1")
    assert (await store.acquire_slots([KEY], "r3", T0)).allowed


async def test_all_or_nothing_a_refusal_takes_no_slot(store: StateStore) -> None:
    await store.acquire_slots([KEY], "a", T0)
    await store.acquire_slots([KEY], "b", T0)

    refused = await store.acquire_slots([TEAM, KEY], "c", T0)

    assert refused.refused_by == KEY
    # The team's slots are untouched: three other requests still fit.
    for holder in ("x", "y", "z"):
        assert (await store.acquire_slots([TEAM], holder, T0)).allowed
    assert not (await store.acquire_slots([TEAM], "w", T0)).allowed


async def test_a_holder_renews_rather_than_takes_a_second_slot(store: StateStore) -> None:
    await store.acquire_slots([KEY], "r1", T0)
    await store.acquire_slots([KEY], "r2", T0)

    again = await store.acquire_slots([KEY], "r1", T0 + LEASE - 1)

    assert again.allowed  # renewed: its lease now runs from T0 + LEASE - 1
    assert again.states[0].remaining == 0
    late = await store.acquire_slots([KEY], "r3", T0 + LEASE + 1)
    assert late.allowed  # r2's lease passed; r1's renewed one did not
    assert not (await store.acquire_slots([KEY], "r4", T0 + LEASE + 1)).allowed


async def test_a_dead_replicas_slots_come_back_when_their_lease_passes(
    open_store: OpenStore,
) -> None:
    crashed, alive = open_store(), open_store()
    await crashed.acquire_slots([KEY], "lost-1", T0)
    await crashed.acquire_slots([KEY], "lost-2", T0)  # never released

    assert not (await alive.acquire_slots([KEY], "new", T0 + LEASE - 1)).allowed
    assert (await alive.acquire_slots([KEY], "new", T0 + LEASE + 0.001)).allowed


async def test_releasing_what_is_not_held_changes_nothing(store: StateStore) -> None:
    await store.release_slots([KEY, TEAM], "nobody")
    await store.acquire_slots([KEY], "r1", T0)
    await store.release_slots([KEY], "r1")
    await store.release_slots([KEY], "r1")  # twice: still one slot, not a negative count

    admitted = [(await store.acquire_slots([KEY], f"n{i}", T0)).allowed for i in range(3)]

    assert admitted == [True, True, False]


async def test_concurrent_acquires_never_over_admit(open_store: OpenStore) -> None:
    replicas = [open_store(), open_store()]

    admissions = await asyncio.gather(
        *(replicas[i % 2].acquire_slots([TEAM, KEY], f"h{i}", T0) for i in range(60))
    )

    assert sum(a.allowed for a in admissions) == 2
    assert {a.refused_by for a in admissions if not a.allowed} == {KEY}
