"""This process's record of each deployment's last calls (the status page's success
rate, percentiles and chart): bounded in samples, age and deployments."""

from __future__ import annotations

from policies.recent_calls import RecentCalls, percentile
from tests.manual_clock import NOON, ManualClock


def test_success_rate_and_percentiles_over_the_last_calls() -> None:
    clock = ManualClock()
    recent = RecentCalls(clock)
    for ms in range(1, 101):  # 1..100 ms, all answered
        recent.outcome("a/x", True, ms / 1000)
    recent.outcome("a/x", False)  # a failure: counted, no latency
    got = recent.recent("a/x")
    assert got.calls == 101
    assert got.success_rate == 100 / 101
    assert got.latency_p50_s == 0.050
    assert got.latency_p95_s == 0.095


def test_a_health_check_counts_for_success_but_not_for_latency() -> None:
    recent = RecentCalls(ManualClock())
    recent.outcome("a/x", True, None)
    got = recent.recent("a/x")
    assert (got.calls, got.success_rate, got.latency_p50_s) == (1, 1.0, None)


def test_old_calls_leave_the_window_and_samples_are_bounded() -> None:
    clock = ManualClock()
    recent = RecentCalls(clock, max_samples=10, window_s=60)
    for _ in range(25):
        recent.outcome("a/x", False)
    assert recent.recent("a/x").calls == 10  # only the last 10 are kept
    clock.advance(61)
    recent.outcome("a/x", True, 0.2)
    got = recent.recent("a/x")
    assert (got.calls, got.success_rate, got.latency_p50_s) == (1, 1.0, 0.2)


def test_first_tokens_have_their_own_percentiles() -> None:
    recent = RecentCalls(ManualClock())
    for ms in (10, 20, 30, 40):
        recent.first_token("a/x", ms / 1000)
    got = recent.recent("a/x")
    assert (got.ttft_p50_s, got.ttft_p95_s) == (0.02, 0.04)
    assert got.calls == 0  # a first token is not an outcome


def test_unknown_deployment_reads_empty() -> None:
    got = RecentCalls(ManualClock()).recent("nobody/x")
    assert got.calls == 0
    assert got.success_rate is None
    assert got.latency_p95_s is None


def test_series_has_every_step_oldest_first_ending_now() -> None:
    clock = ManualClock()
    recent = RecentCalls(clock, bucket_s=10, buckets=6)
    recent.outcome("a/x", True, 0.1)
    recent.outcome("a/x", True, 0.3)
    recent.outcome("a/x", True, 0.2)
    clock.advance(20)
    recent.outcome("a/x", False)
    points = recent.series("a/x")
    assert [p.start for p in points] == [NOON - 30 + 10 * i for i in range(6)]
    first = next(p for p in points if p.start == NOON)
    assert (first.calls, first.failures, first.p50_latency_s) == (3, 0, 0.2)
    last = points[-1]
    assert (last.calls, last.failures, last.p50_latency_s) == (1, 1, None)
    clock.advance(100)  # everything older than the six steps is gone
    assert all(p.calls == 0 for p in recent.series("a/x"))


def test_deployments_are_bounded_oldest_touched_dropped() -> None:
    recent = RecentCalls(ManualClock(), max_deployments=2)
    recent.outcome("a", True, 0.1)
    recent.outcome("b", True, 0.1)
    recent.outcome("a", True, 0.1)  # touched again: "b" is now the oldest
    recent.outcome("c", True, 0.1)
    assert recent.recent("b").calls == 0
    assert recent.recent("a").calls == 2
    assert recent.recent("c").calls == 1


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([5.0], 0.95) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
