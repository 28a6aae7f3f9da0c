"""Each deployment's last calls as the status page shows them: success rate, p50/p95
latency and time to first token, and a short series for its chart.

The samples are kept in the shared state store (`StateStore.record_call`, one write per
finished upstream call, made off the request's path by `Health`; read back with
`recent_calls`), the same store routing's breakers and statistics live in: with several
replicas or workers on one Redis, every one of them computes the same figures from the
same samples, whichever answers the page. Here are only the computations, pure functions
of the samples and the time.

Bounded by the store: the last `RECENT_CALLS_CAP` calls per deployment. So on a busy
deployment the figures cover its last few hundred calls, not all of `window_s`, and the
series' older steps read quiet once their calls have been pushed out."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from policies.state.base import CallSample

BUCKET_SAMPLES = 64  # a step's p50 is that of its latest successful calls, at most this many


@dataclass(frozen=True, slots=True)
class Recent:
    """One deployment's last calls (None where there were none)."""

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


EMPTY = Recent(0, None, None, None, None, None)


@dataclass(frozen=True, slots=True)
class RecentCalls:
    """How the page summarises: calls of the last `window_s` for the figures; `buckets`
    steps of `bucket_s` for the series."""

    window_s: float = 300.0
    bucket_s: float = 10.0
    buckets: int = 60

    def since(self, now: float) -> float:
        """The oldest end time either summary needs: what to read from the store."""
        return now - max(self.window_s, self.bucket_s * self.buckets)

    def recent(self, samples: Sequence[CallSample], now: float) -> Recent:
        cutoff = now - self.window_s
        kept = [s for s in samples if s.at > cutoff]
        if not kept:
            return EMPTY
        latencies = sorted(s.seconds for s in kept if s.ok and s.seconds is not None)
        ttfts = sorted(s.first_token_s for s in kept if s.first_token_s is not None)
        return Recent(
            len(kept),
            sum(s.ok for s in kept) / len(kept),
            percentile(latencies, 0.5),
            percentile(latencies, 0.95),
            percentile(ttfts, 0.5),
            percentile(ttfts, 0.95),
        )

    def series(self, samples: Sequence[CallSample], now: float) -> list[Point]:
        """The last `buckets` steps, oldest first, every step present (a quiet one with
        no calls), ending with the step now runs in. A sample from after `now` (another
        replica's clock a little ahead) counts in the current step."""
        current = math.floor(now / self.bucket_s) * self.bucket_s
        first = current - (self.buckets - 1) * self.bucket_s
        calls = [0] * self.buckets
        failures = [0] * self.buckets
        latencies: list[list[float]] = [[] for _ in range(self.buckets)]
        for sample in samples:  # oldest first: each step keeps its latest latencies
            if sample.at < first:
                continue
            i = min(self.buckets - 1, int((sample.at - first) // self.bucket_s))
            calls[i] += 1
            failures[i] += not sample.ok
            if sample.ok and sample.seconds is not None:
                latencies[i].append(sample.seconds)
        return [
            Point(
                first + i * self.bucket_s,
                calls[i],
                failures[i],
                percentile(sorted(latencies[i][-BUCKET_SAMPLES:]), 0.5),
            )
            for i in range(self.buckets)
        ]


def percentile(ordered: Sequence[float], q: float) -> float | None:
    """The nearest-rank percentile of `ordered` (sorted), None when empty."""
    if not ordered:
        return None
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]
