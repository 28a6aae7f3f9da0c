"""Circuit breakers in both stores: closed → open → half-open with exactly one probe →
closed or open again, Retry-After, the failure-rate rule, stale and released probes, late
outcomes that are not the probe's, read-only views."""

from __future__ import annotations

import asyncio

from policies.state.base import BreakerPolicy, BreakerState, BreakerView, StateStore
from tests.policies.state.conftest import OpenStore

T0 = 1_700_000_000.25
POLICY = BreakerPolicy(failures=3, cooldown_s=5.0, probe_timeout_s=60.0)
EAST = "gpt-4o@east"


async def trip(
    store: StateStore, deployment: str = EAST, retry_after_s: float | None = None
) -> None:
    """Three consecutive failures at T0: open until T0 + 5 (or the Retry-After)."""
    for _ in range(POLICY.failures):
        await store.breaker_record(deployment, POLICY, False, T0, retry_after_s)


async def test_consecutive_failures_open_the_breaker(store: StateStore) -> None:
    for i in range(2):
        view = await store.breaker_record(EAST, POLICY, False, T0 + i)
        assert view == BreakerView(BreakerState.CLOSED, allowed=True, consecutive_failures=i + 1)
        assert (await store.breaker_acquire(EAST, POLICY, T0 + i)).allowed

    opened = await store.breaker_record(EAST, POLICY, False, T0 + 2)

    assert opened == BreakerView(BreakerState.OPEN, False, False, T0 + 7, 3)
    refused = await store.breaker_acquire(EAST, POLICY, T0 + 6.9)
    assert (refused.state, refused.allowed, refused.probe) == (BreakerState.OPEN, False, False)


async def test_a_success_resets_the_consecutive_count(store: StateStore) -> None:
    for ok in (False, False, True, False, False):
        view = await store.breaker_record(EAST, POLICY, ok, T0)
    assert view == BreakerView(BreakerState.CLOSED, allowed=True, consecutive_failures=2)


async def test_half_open_gives_exactly_one_probe(open_store: OpenStore) -> None:
    replicas = [open_store(), open_store()]
    await trip(replicas[0])

    views = await asyncio.gather(
        *(replicas[i % 2].breaker_acquire(EAST, POLICY, T0 + 5) for i in range(20))
    )

    probes = [v for v in views if v.allowed]
    assert len(probes) == 1
    assert probes[0].probe
    assert probes[0].state is BreakerState.HALF_OPEN
    assert {(v.state, v.allowed, v.probe) for v in views if not v.allowed} == {
        (BreakerState.HALF_OPEN, False, False)
    }


async def test_a_probe_success_closes_and_resets_counts(store: StateStore) -> None:
    await trip(store)
    assert (await store.breaker_acquire(EAST, POLICY, T0 + 5)).probe

    closed = await store.breaker_record(EAST, POLICY, True, T0 + 6, probe=True)

    assert closed == BreakerView(BreakerState.CLOSED, allowed=True)
    assert all([(await store.breaker_acquire(EAST, POLICY, T0 + 6)).allowed for _ in range(3)])
    for _ in range(2):  # counting starts over
        view = await store.breaker_record(EAST, POLICY, False, T0 + 7)
    assert view.state is BreakerState.CLOSED


async def test_a_probe_failure_reopens_with_the_cooldown_restarted(store: StateStore) -> None:
    await trip(store)
    assert (await store.breaker_acquire(EAST, POLICY, T0 + 10)).probe

    reopened = await store.breaker_record(EAST, POLICY, False, T0 + 11, probe=True)

    assert reopened == BreakerView(BreakerState.OPEN, False, False, T0 + 16, 4)
    assert not (await store.breaker_acquire(EAST, POLICY, T0 + 15.9)).allowed
    assert (await store.breaker_acquire(EAST, POLICY, T0 + 16)).probe


async def test_retry_after_longer_than_the_cooldown_extends_it(store: StateStore) -> None:
    await trip(store, retry_after_s=30.0)
    await trip(store, "gpt-4o@west", retry_after_s=2.0)

    assert not (await store.breaker_acquire(EAST, POLICY, T0 + 29)).allowed
    assert (await store.breaker_acquire(EAST, POLICY, T0 + 30)).probe
    assert (await store.breaker_acquire("gpt-4o@west", POLICY, T0 + 5)).probe  # cooldown wins


async def test_late_outcomes_while_open_never_close_it(store: StateStore) -> None:
    await trip(store)

    late_ok = await store.breaker_record(EAST, POLICY, True, T0 + 1)
    assert (late_ok.state, late_ok.open_until) == (BreakerState.OPEN, T0 + 5)
    late_429 = await store.breaker_record(EAST, POLICY, False, T0 + 1, retry_after_s=20.0)
    assert (late_429.state, late_429.open_until) == (BreakerState.OPEN, T0 + 21)


async def test_while_half_open_only_the_probes_outcome_counts(store: StateStore) -> None:
    await trip(store)
    assert (await store.breaker_acquire(EAST, POLICY, T0 + 5)).probe
    probe_out = BreakerView(BreakerState.HALF_OPEN, False, False, T0 + 5, 3)

    # Late outcomes of calls sent before the breaker opened: no change, probe still out.
    assert await store.breaker_record(EAST, POLICY, True, T0 + 6) == probe_out
    assert await store.breaker_record(EAST, POLICY, False, T0 + 6, retry_after_s=30) == probe_out
    assert not (await store.breaker_acquire(EAST, POLICY, T0 + 6)).allowed

    closed = await store.breaker_record(EAST, POLICY, True, T0 + 7, probe=True)
    assert closed == BreakerView(BreakerState.CLOSED, allowed=True)


async def test_a_probe_outcome_on_a_breaker_no_longer_half_open_counts_as_any_other(
    store: StateStore,
) -> None:
    """A stale probe reporting after another probe closed or re-opened the breaker."""
    await trip(store)
    late = await store.breaker_record(EAST, POLICY, True, T0 + 1, probe=True)
    assert (late.state, late.open_until) == (BreakerState.OPEN, T0 + 5)  # open: never closes

    assert (await store.breaker_acquire(EAST, POLICY, T0 + 5)).probe
    await store.breaker_record(EAST, POLICY, True, T0 + 6, probe=True)
    closed = await store.breaker_record(EAST, POLICY, False, T0 + 7, probe=True)
    assert closed == BreakerView(BreakerState.CLOSED, allowed=True, consecutive_failures=1)


async def test_a_released_probe_goes_to_the_next_acquirer(open_store: OpenStore) -> None:
    first, second = open_store(), open_store()
    await trip(first)
    assert (await first.breaker_acquire(EAST, POLICY, T0 + 5)).probe
    assert not (await second.breaker_acquire(EAST, POLICY, T0 + 6)).allowed

    await first.breaker_release(EAST, T0 + 6)

    freed = (await second.breaker_views([EAST], POLICY, T0 + 6))[EAST]
    assert freed == BreakerView(BreakerState.HALF_OPEN, True, False, T0 + 5, 3)
    assert (await second.breaker_acquire(EAST, POLICY, T0 + 6)).probe  # no 60 s wait
    assert not (await first.breaker_acquire(EAST, POLICY, T0 + 6)).allowed
    reopened = await second.breaker_record(EAST, POLICY, False, T0 + 7, probe=True)
    assert (reopened.state, reopened.open_until) == (BreakerState.OPEN, T0 + 12)


async def test_release_changes_nothing_unless_half_open(store: StateStore) -> None:
    await store.breaker_release("never-called", T0)
    await store.breaker_record(EAST, POLICY, False, T0)
    await store.breaker_release(EAST, T0)
    assert (await store.breaker_record(EAST, POLICY, False, T0)).consecutive_failures == 2

    await store.breaker_record(EAST, POLICY, False, T0)  # the third: open until T0 + 5
    await store.breaker_release(EAST, T0 + 1)
    assert not (await store.breaker_acquire(EAST, POLICY, T0 + 4.9)).allowed
    views = await store.breaker_views([EAST, "never-called"], POLICY, T0 + 1)
    assert views == {
        EAST: BreakerView(BreakerState.OPEN, False, False, T0 + 5, 3),
        "never-called": BreakerView(BreakerState.CLOSED, allowed=True),
    }


async def test_failure_rate_opens_once_enough_calls_failed(store: StateStore) -> None:
    policy = BreakerPolicy(failures=100, failure_rate=0.5, window_s=10.0, min_calls=4)

    for ok in (True, False, True):
        assert (await store.breaker_record(EAST, policy, ok, T0)).state is BreakerState.CLOSED
    opened = await store.breaker_record(EAST, policy, False, T0 + 1)  # 2 of 4 failed

    assert opened.state is BreakerState.OPEN
    assert opened.consecutive_failures == 1


async def test_failure_rate_needs_min_calls_within_the_window(store: StateStore) -> None:
    policy = BreakerPolicy(failures=100, failure_rate=0.5, window_s=10.0, min_calls=4)
    for _ in range(3):
        assert (await store.breaker_record(EAST, policy, False, T0)).state is BreakerState.CLOSED

    # The three failures at T0 have left the window: 2 calls in it, below min_calls.
    await store.breaker_record(EAST, policy, True, T0 + 11)
    view = await store.breaker_record(EAST, policy, False, T0 + 12)

    assert view.state is BreakerState.CLOSED


async def test_without_failure_rate_only_consecutive_failures_count(store: StateStore) -> None:
    policy = BreakerPolicy(failures=3, min_calls=2)
    for ok in (False, False, True) * 5:
        view = await store.breaker_record(EAST, policy, ok, T0)
    assert view.state is BreakerState.CLOSED


async def test_a_stale_probe_frees_the_slot(store: StateStore) -> None:
    await trip(store)
    assert (await store.breaker_acquire(EAST, POLICY, T0 + 10)).probe

    assert not (await store.breaker_acquire(EAST, POLICY, T0 + 69.9)).allowed
    stale = (await store.breaker_views([EAST], POLICY, T0 + 70))[EAST]
    assert (stale.state, stale.allowed, stale.probe) == (BreakerState.HALF_OPEN, True, False)
    assert (await store.breaker_acquire(EAST, POLICY, T0 + 70)).probe
    assert not (await store.breaker_acquire(EAST, POLICY, T0 + 70)).allowed


async def test_views_are_read_only(store: StateStore) -> None:
    await trip(store)
    assert await store.breaker_views([], POLICY, T0) == {}

    during = await store.breaker_views([EAST, "never-called"], POLICY, T0 + 1)
    assert during == {
        EAST: BreakerView(BreakerState.OPEN, False, False, T0 + 5, 3),
        "never-called": BreakerView(BreakerState.CLOSED, allowed=True),
    }
    for _ in range(3):  # past the cooldown: half-open and allowed, the probe not taken
        after = (await store.breaker_views([EAST], POLICY, T0 + 5))[EAST]
        assert after == BreakerView(BreakerState.HALF_OPEN, True, False, T0 + 5, 3)
    assert (await store.breaker_acquire(EAST, POLICY, T0 + 5)).probe
    taken = (await store.breaker_views([EAST], POLICY, T0 + 5))[EAST]
    assert (taken.state, taken.allowed) == (BreakerState.HALF_OPEN, False)
