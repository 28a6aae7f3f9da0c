"""Headroom in both stores: `admit` and `acquire_slots` refuse unless, after the cost, each
limit still has its headroom left (what a batch line leaves to live requests); a refusal's
`retry_after_s` is when cost and headroom both fit; no headroom is the old behaviour."""

from __future__ import annotations

import pytest

from policies.state.base import Limit, LimitKind, StateStore

T0 = 1_700_000_000.25
RPM = Limit("rpm:team:a", LimitKind.RATE, capacity=10, period_s=60.0)  # a token every 6 s
BUDGET = Limit(
    "budget:team:a", LimitKind.BUDGET, capacity=1000, period_s=86400.0, period_end=T0 + 100
)
SLOTS = Limit("concurrency:key:k", LimitKind.CONCURRENCY, capacity=4, period_s=30.0)


async def test_a_rate_keeps_its_headroom_for_others(store: StateStore) -> None:
    assert (await store.admit([RPM], [5], T0, [5])).allowed  # 5 left, 5 kept: just fits

    refused = await store.admit([RPM], [1], T0, [5])  # 5 left: 4 after it, under 5

    assert not refused.allowed
    assert refused.refused_by == RPM
    (state,) = refused.states
    assert state.remaining == 5  # the true count, not the share's
    assert state.retry_after_s == pytest.approx(6.0)  # one token more makes cost + 5 fit
    live = await store.admit([RPM], [1], T0)  # the same cost without headroom
    assert live.allowed
    assert live.states[0].remaining == 4


async def test_a_refusal_for_headroom_takes_nothing_from_any_limit(store: StateStore) -> None:
    refused = await store.admit([BUDGET, RPM], [1, 1], T0, [0, 10])

    assert refused.refused_by == RPM
    budget, rpm = await store.peek([BUDGET, RPM], T0)
    assert (budget.remaining, rpm.remaining) == (1000, 10)


async def test_a_budget_keeps_its_headroom_until_the_period_ends(store: StateStore) -> None:
    assert (await store.admit([BUDGET], [400], T0, [500])).allowed

    refused = await store.admit([BUDGET], [200], T0, [500])  # 600 left: 400 after, under 500

    assert not refused.allowed
    assert refused.states[0].retry_after_s == pytest.approx(100.0)  # only the reset helps
    assert (await store.admit([BUDGET], [200], T0)).allowed


async def test_more_than_capacity_with_headroom_waits_for_a_full_bucket(
    store: StateStore,
) -> None:
    await store.admit([RPM], [4], T0)

    refused = await store.admit([RPM], [6], T0, [5])  # 11 > 10: never fits

    assert refused.states[0].retry_after_s == pytest.approx(24.0)  # 4 tokens to full


async def test_no_headroom_and_zero_headroom_are_the_same(store: StateStore) -> None:
    await store.admit([RPM], [8], T0)

    zero = await store.admit([RPM], [3], T0, [0])
    none = await store.admit([RPM], [3], T0)

    assert zero == none
    assert zero.states[0].retry_after_s == pytest.approx(6.0)


async def test_slots_keep_their_headroom_for_others(store: StateStore) -> None:
    assert (await store.acquire_slots([SLOTS], "b1", T0, [2])).allowed
    assert (await store.acquire_slots([SLOTS], "b2", T0, [2])).allowed

    refused = await store.acquire_slots([SLOTS], "b3", T0, [2])  # 2 free: none to spare

    assert not refused.allowed
    assert refused.refused_by == SLOTS
    assert (refused.states[0].remaining, refused.states[0].retry_after_s) == (2, 1.0)
    assert (await store.acquire_slots([SLOTS], "b1", T0, [2])).allowed  # a renewal
    assert (await store.acquire_slots([SLOTS], "live-1", T0)).allowed
    assert (await store.acquire_slots([SLOTS], "live-2", T0)).allowed
    await store.release_slots([SLOTS], "b1")
    assert not (await store.acquire_slots([SLOTS], "b3", T0, [2])).allowed  # 3 held now
    await store.release_slots([SLOTS], "live-1")
    await store.release_slots([SLOTS], "live-2")
    assert (await store.acquire_slots([SLOTS], "b3", T0, [2])).allowed
