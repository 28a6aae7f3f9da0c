"""Limits in both stores: token buckets and budgets, all-or-nothing admission, settling
with `charge`, and no over-admission under concurrency (also across two Redis clients)."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from policies.state.base import Limit, LimitKind, StateStore
from tests.policies.state.conftest import OpenStore

T0 = 1_700_000_000.25  # a wall-clock-sized `now`, so float rounding is what production sees
RPM = Limit("rpm:team:a", LimitKind.RATE, capacity=10, period_s=60.0)  # a token every 6 s
TPM = Limit("tpm:team:a", LimitKind.RATE, capacity=100, period_s=60.0)
BUDGET = Limit("usd:team:a", LimitKind.BUDGET, capacity=1000, period_s=86400.0, period_end=T0 + 100)


async def test_admit_takes_the_cost_and_reports_what_is_left(store: StateStore) -> None:
    admission = await store.admit([RPM], [3], T0)

    assert admission.allowed
    assert admission.refused_by is None
    (state,) = admission.states
    assert state.limit == RPM
    assert state.remaining == 7
    assert state.reset_s == pytest.approx(18.0)  # 3 tokens at 6 s each
    assert state.retry_after_s == 0.0


async def test_refuses_a_cost_that_does_not_fit_and_takes_nothing(store: StateStore) -> None:
    await store.admit([RPM], [8], T0)

    admission = await store.admit([RPM], [3], T0)

    assert not admission.allowed
    assert admission.refused_by == RPM
    (state,) = admission.states
    assert state.remaining == 2
    assert state.reset_s == pytest.approx(48.0)
    assert state.retry_after_s == pytest.approx(6.0)  # one more token
    assert (await store.peek([RPM], T0))[0].remaining == 2


async def test_a_cost_above_capacity_is_told_the_time_to_full(store: StateStore) -> None:
    await store.admit([RPM], [4], T0)

    admission = await store.admit([RPM], [11], T0)

    assert not admission.allowed
    assert admission.states[0].retry_after_s == pytest.approx(24.0)
    # It never fits: once full there is nothing better to wait for.
    assert (await store.admit([RPM], [11], T0 + 24)).states[0].retry_after_s == 0.0


async def test_buckets_refill_continuously(store: StateStore) -> None:
    fast = Limit("rps:key:k", LimitKind.RATE, capacity=10, period_s=1.0)
    assert (await store.admit([fast], [10], T0)).states[0].remaining == 0

    early = await store.admit([fast], [1], T0 + 0.05)
    assert not early.allowed
    assert early.states[0].retry_after_s == pytest.approx(0.05)

    # 0.1 s at 10/s is one whole token, even though the float sum is not exactly 1.0.
    on_time = await store.admit([fast], [1], T0 + 0.1)
    assert on_time.allowed
    assert on_time.states[0].remaining == 0

    (later,) = await store.peek([fast], T0 + 0.55)
    assert later.remaining == 4
    assert later.reset_s == pytest.approx(0.55)
    (full,) = await store.peek([fast], T0 + 60)
    assert (full.remaining, full.reset_s) == (10, 0.0)


async def test_peek_of_an_unused_limit_is_full_and_changes_nothing(store: StateStore) -> None:
    assert await store.peek([RPM, BUDGET], T0) == await store.peek([RPM, BUDGET], T0)
    rpm, budget = await store.peek([RPM, BUDGET], T0)
    assert (rpm.remaining, rpm.reset_s, rpm.retry_after_s) == (10, 0.0, 0.0)
    assert (budget.remaining, budget.reset_s) == (1000, 100.0)


async def test_all_or_nothing_a_refusal_takes_from_no_limit(store: StateStore) -> None:
    per_key = Limit("rpm:key:k", LimitKind.RATE, capacity=2, period_s=60.0)
    await store.admit([per_key], [2], T0)

    admission = await store.admit([TPM, per_key, RPM], [50, 1, 1], T0)

    assert not admission.allowed
    assert admission.refused_by == per_key
    tpm, key, rpm = admission.states
    assert (tpm.remaining, tpm.retry_after_s) == (100, 0.0)
    assert key.remaining == 0
    assert key.retry_after_s == pytest.approx(30.0)
    assert rpm.remaining == 10
    assert [s.remaining for s in await store.peek([TPM, per_key, RPM], T0)] == [100, 0, 10]


async def test_refused_by_names_the_first_limit_without_room(store: StateStore) -> None:
    await store.admit([TPM, RPM], [100, 10], T0)

    admission = await store.admit([RPM, TPM], [1, 1], T0)

    assert admission.refused_by == RPM
    assert admission.states[1].retry_after_s == pytest.approx(0.6)  # TPM is short too


async def test_budgets_refuse_until_the_period_ends_then_start_over(store: StateStore) -> None:
    first = await store.admit([BUDGET], [900], T0)
    assert first.allowed
    assert (first.states[0].remaining, first.states[0].reset_s) == (100, 100.0)

    refused = await store.admit([BUDGET], [200], T0 + 40)
    assert not refused.allowed
    assert refused.states[0].retry_after_s == pytest.approx(60.0)  # when the period ends

    next_period = replace(BUDGET, period_end=BUDGET.period_end + 86400)
    admitted = await store.admit([next_period], [200], T0 + 101)
    assert admitted.allowed
    assert admitted.states[0].remaining == 800
    assert admitted.states[0].reset_s == pytest.approx(86399.0)


async def test_charge_settles_an_estimate_and_may_overdraw(store: StateStore) -> None:
    await store.admit([TPM], [50], T0)  # the estimate

    await store.charge([TPM], [-30], T0)  # the response used 20
    assert (await store.peek([TPM], T0))[0].remaining == 80

    await store.charge([TPM], [500], T0)  # far more than estimated: no check, below zero
    (overdrawn,) = await store.peek([TPM], T0)
    assert overdrawn.remaining == 0
    assert overdrawn.reset_s == pytest.approx(520 * 0.6)  # from -420 tokens back to 100
    refused = await store.admit([TPM], [1], T0)
    assert refused.states[0].retry_after_s == pytest.approx(421 * 0.6)

    await store.charge([TPM], [-10_000], T0)  # a refund never fills past capacity
    assert (await store.peek([TPM], T0))[0].remaining == 100


async def test_charge_on_budgets(store: StateStore) -> None:
    await store.admit([BUDGET], [900], T0)

    await store.charge([BUDGET], [300], T0)
    assert (await store.peek([BUDGET], T0))[0].remaining == 0
    assert not (await store.admit([BUDGET], [1], T0)).allowed

    await store.charge([BUDGET], [-250], T0)
    assert (await store.peek([BUDGET], T0))[0].remaining == 50
    await store.charge([BUDGET], [-5000], T0)
    assert (await store.peek([BUDGET], T0))[0].remaining == 1000


async def test_no_limits_admits_and_mismatched_costs_are_an_error(store: StateStore) -> None:
    assert (await store.admit([], [], T0)).allowed
    with pytest.raises(ValueError, match="zip"):
        await store.admit([RPM, TPM], [1], T0)


@pytest.mark.parametrize("kind", [LimitKind.RATE, LimitKind.BUDGET])
async def test_concurrent_admits_never_over_admit(open_store: OpenStore, kind: LimitKind) -> None:
    """Two replicas (for Redis: two clients with their own connections), 100 admits at once,
    room for 10: exactly 10 get in."""
    limit = Limit(f"race:{kind}", kind, capacity=10, period_s=3600.0, period_end=T0 + 3600)
    replicas = [open_store(), open_store()]

    admissions = await asyncio.gather(
        *(replicas[i % 2].admit([limit, TPM], [1, 1], T0) for i in range(100))
    )

    assert sum(a.allowed for a in admissions) == 10
    assert {a.refused_by for a in admissions if not a.allowed} == {limit}
    assert [s.remaining for s in await replicas[1].peek([limit, TPM], T0)] == [0, 90]
