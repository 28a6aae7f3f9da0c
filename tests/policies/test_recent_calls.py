"""What the status page computes from a deployment's last calls (the samples the store
keeps: tests/policies/state/test_recent_calls_store.py): success rate, percentiles, time
to first token and the chart's series, within their window."""

from __future__ import annotations

from policies.recent_calls import RecentCalls, percentile
from policies.state.base import CallSample
from tests.manual_clock import NOON


def test_success_rate_and_percentiles_over_the_last_calls() -> None:
    samples = [CallSample(NOON, True, ms / 1000) for ms in range(1, 101)]  # 1..100 ms
    samples.append(CallSample(NOON, False))  # a failure: counted, no latency
    got = RecentCalls().recent(samples, NOON)
    assert got.calls == 101
    assert got.success_rate == 100 / 101
    assert got.latency_p50_s == 0.050
    assert got.latency_p95_s == 0.095


def test_a_health_check_counts_for_success_but_not_for_latency() -> None:
    got = RecentCalls().recent([CallSample(NOON, True, None)], NOON)
    assert (got.calls, got.success_rate, got.latency_p50_s) == (1, 1.0, None)


def test_calls_older_than_the_window_are_left_out() -> None:
    samples = [CallSample(NOON - 61, False) for _ in range(25)]
    samples.append(CallSample(NOON - 1, True, 0.2))
    got = RecentCalls(window_s=60).recent(samples, NOON)
    assert (got.calls, got.success_rate, got.latency_p50_s) == (1, 1.0, 0.2)


def test_first_tokens_have_their_own_percentiles() -> None:
    samples = [CallSample(NOON, True, 1.0, ms / 1000) for ms in (10, 20, 30, 40)]
    samples.append(CallSample(NOON, True, 1.0))  # not a stream: no first token
    got = RecentCalls().recent(samples, NOON)
    assert (got.ttft_p50_s, got.ttft_p95_s) == (0.02, 0.04)
    assert got.calls == 5


def test_no_calls_reads_empty() -> None:
    got = RecentCalls().recent([], NOON)
    assert got.calls == 0
    assert got.success_rate is None
    assert got.latency_p95_s is None


def test_series_has_every_step_oldest_first_ending_now() -> None:
    recent = RecentCalls(bucket_s=10, buckets=6)
    samples = [CallSample(NOON, True, s) for s in (0.1, 0.3, 0.2)]
    samples.append(CallSample(NOON + 20, False))
    points = recent.series(samples, NOON + 20)
    assert [p.start for p in points] == [NOON - 30 + 10 * i for i in range(6)]
    first = next(p for p in points if p.start == NOON)
    assert (first.calls, first.failures, first.p50_latency_s) == (3, 0, 0.2)
    last = points[-1]
    assert (last.calls, last.failures, last.p50_latency_s) == (1, 1, None)
    # Everything older than the six steps is gone.
    assert all(p.calls == 0 for p in recent.series(samples, NOON + 120))


def test_a_sample_from_a_clock_ahead_counts_in_the_current_step() -> None:
    points = RecentCalls(bucket_s=10, buckets=3).series([CallSample(NOON + 15, True, 0.1)], NOON)
    assert [p.calls for p in points] == [0, 0, 1]


def test_since_covers_the_window_and_the_series() -> None:
    assert RecentCalls(window_s=300, bucket_s=10, buckets=60).since(NOON) == NOON - 600
    assert RecentCalls(window_s=300, bucket_s=10, buckets=6).since(NOON) == NOON - 300


def test_percentile_is_nearest_rank() -> None:
    assert percentile([], 0.5) is None
    assert percentile([5.0], 0.95) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.0
