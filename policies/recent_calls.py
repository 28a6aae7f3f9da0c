"""What this process saw of each deployment lately, for the status page: the outcomes
and latencies of its last calls, and a short latency series for its chart.

The shared store keeps what routing needs (breakers, an EWMA latency, a first-token
EWMA and deviation, calls in flight): none of them is a percentile or a success rate,
and the breaker's outcome window exists only where `failure_rate` is set. Percentiles
need samples, and keeping every replica's samples in Redis on the request path would
cost a write per call for a page people look at now and then; so these are per process,
bounded, and fed where `Health` records an outcome and where a stream's first token is
timed. With several replicas each answers for its own calls (the page says so).

Bounded: `max_samples` outcomes and first tokens per deployment, none older than
`window_s`; the series has one point per `bucket_s` for `buckets` of them; at most
`max_deployments` deployments (the config names them; a reload may rename some: the
oldest-touched is dropped first)."""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

Clock = Callable[[], float]
BUCKET_SAMPLES = 64


@dataclass(slots=True)
class _Bucket:
    start: float
    calls: int = 0
    failures: int = 0
    # The latest latencies of the step's successful calls (its p50 is theirs).
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=BUCKET_SAMPLES))


@dataclass(slots=True)
class _Deployment:
    outcomes: deque[tuple[float, bool, float | None]]
    first_tokens: deque[tuple[float, float]]
    series: deque[_Bucket] = field(default_factory=deque)


@dataclass(frozen=True, slots=True)
class Recent:
    """One deployment's last calls on this process (None where there were none)."""

    calls: int
    success_rate: float | None
    latency_p50_s: float | None
    latency_p95_s: float | None
    ttft_p50_s: float | None
    ttft_p95_s: float | None


@dataclass(frozen=True, slots=True)
class Point:
    """One step of the series: calls that ended in [start, start + bucket_s)."""

    start: float
    calls: int
    failures: int
    p50_latency_s: float | None


class RecentCalls:
    def __init__(
        self,
        clock: Clock,
        *,
        max_samples: int = 256,
        window_s: float = 300.0,
        bucket_s: float = 10.0,
        buckets: int = 60,
        max_deployments: int = 1024,
    ) -> None:
        self._clock = clock
        self._max_samples = max_samples
        self.window_s = window_s
        self.bucket_s = bucket_s
        self._buckets = buckets
        self._max_deployments = max_deployments
        self._by_label: OrderedDict[str, _Deployment] = OrderedDict()

    def outcome(self, label: str, ok: bool, seconds: float | None = None) -> None:
        """A call to `label` ended: `ok` as its breaker counted it; `seconds`, when its
        latency says something about serving (not a health check's)."""
        now = self._clock()
        entry = self._entry(label)
        entry.outcomes.append((now, ok, seconds))
        bucket = self._bucket(entry, now)
        bucket.calls += 1
        bucket.failures += not ok
        if ok and seconds is not None:
            bucket.latencies.append(seconds)

    def first_token(self, label: str, seconds: float) -> None:
        self._entry(label).first_tokens.append((self._clock(), seconds))

    def recent(self, label: str) -> Recent:
        entry = self._by_label.get(label)
        if entry is None:
            return Recent(0, None, None, None, None, None)
        cutoff = self._clock() - self.window_s
        outcomes = [(ok, s) for at, ok, s in entry.outcomes if at > cutoff]
        latencies = sorted(s for ok, s in outcomes if ok and s is not None)
        ttfts = sorted(s for at, s in entry.first_tokens if at > cutoff)
        calls = len(outcomes)
        rate = sum(ok for ok, _ in outcomes) / calls if calls else None
        return Recent(
            calls,
            rate,
            percentile(latencies, 0.5),
            percentile(latencies, 0.95),
            percentile(ttfts, 0.5),
            percentile(ttfts, 0.95),
        )

    def series(self, label: str) -> list[Point]:
        """The last `buckets` steps, oldest first, every step present (a quiet one with
        no calls), ending with the step now runs in."""
        now = self._clock()
        current = math.floor(now / self.bucket_s) * self.bucket_s
        entry = self._by_label.get(label)
        kept = {b.start: b for b in entry.series} if entry is not None else {}
        points = []
        for i in range(self._buckets - 1, -1, -1):
            start = current - i * self.bucket_s
            b = kept.get(start)
            if b is None:
                points.append(Point(start, 0, 0, None))
            else:
                p50 = percentile(sorted(b.latencies), 0.5)
                points.append(Point(start, b.calls, b.failures, p50))
        return points

    def _entry(self, label: str) -> _Deployment:
        entry = self._by_label.get(label)
        if entry is None:
            entry = _Deployment(deque(maxlen=self._max_samples), deque(maxlen=self._max_samples))
            self._by_label[label] = entry
            while len(self._by_label) > self._max_deployments:
                self._by_label.popitem(last=False)
        else:
            self._by_label.move_to_end(label)
        return entry

    def _bucket(self, entry: _Deployment, now: float) -> _Bucket:
        start = math.floor(now / self.bucket_s) * self.bucket_s
        series = entry.series
        if not series or series[-1].start < start:
            series.append(_Bucket(start))
            oldest = start - (self._buckets - 1) * self.bucket_s
            while series and series[0].start < oldest:
                series.popleft()
            return series[-1]
        # An injected clock may step back: fold into the last bucket rather than reorder.
        return series[-1]


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The nearest-rank percentile of `ordered` (sorted), None when empty."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]
