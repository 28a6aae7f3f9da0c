"""Timed runs of Turnout's continuous-batching `Engine`, shared by local_bench.py,
jax_bench.py and prefix_bench.py: N greedy jobs submitted at once, sinks that ignore EOS
(each stream makes exactly the tokens asked for), each stream's first and last token timed
on the engine thread; the figures of one run as one dict (what bench/results/*.json hold).

A `probe` (a callable the first stream's sink calls at each token, on the engine thread)
records the largest value it returned during the run: the benches read the KV cache's
bytes with it, which the torch cache grows and shrinks with the longest live sequence."""

from __future__ import annotations

import gc
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

Probe = Callable[[], int]


def stream_record(tokens: int, start: float, first: float | None, end: float) -> dict[str, Any]:
    """One stream's figures: tokens, seconds from submit to first token and to the end."""
    seconds = end - start
    return {
        "tokens": tokens,
        "ttft_s": (first - start) if first is not None else None,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds > 0 else 0.0,
    }


def run_record(streams: list[dict[str, Any]], wall: float) -> dict[str, Any]:
    total = sum(s["tokens"] for s in streams)
    ttfts = [s["ttft_s"] for s in streams if s["ttft_s"] is not None]
    return {
        "streams": len(streams),
        "tokens": total,
        "wall_s": wall,
        "aggregate_tokens_per_s": total / wall,
        "per_stream_tokens_per_s": statistics.median(s["tokens_per_s"] for s in streams),
        "ttft_p50_s": statistics.median(ttfts) if ttfts else None,
        "ttft_max_s": max(ttfts) if ttfts else None,
        "per_stream": streams,
    }


def engine_streams(
    engine: Any,
    prompts: Sequence[Sequence[int]],
    tokens: int,
    *,
    probe: Probe | None = None,
    timeout: float = 900,
) -> tuple[list[list[int]], dict[str, Any]]:
    """One greedy job per prompt, exactly `tokens` new tokens each (EOS ignored), all
    submitted at once → (each stream's tokens, the run's figures)."""
    from providers.local.job import Job
    from providers.local.runner import RowSampling

    done = _Countdown(len(prompts))
    sinks = [_Sink(done, probe if index == 0 else None) for index in range(len(prompts))]
    jobs = [
        Job(list(prompt), [RowSampling(temperature=0)], [sink], tokens)
        for prompt, sink in zip(prompts, sinks, strict=True)
    ]
    gc.collect()
    start = time.perf_counter()
    for job in jobs:
        engine.submit(job)
    if not done.wait(timeout=timeout):
        raise RuntimeError(f"{len(prompts)} streams did not finish in {timeout:.0f} s")
    end = max(sink.end for sink in sinks)
    for sink in sinks:
        if sink.reason != "length" or len(sink.tokens) != tokens:
            raise RuntimeError(f"a stream ended {sink.reason!r} after {len(sink.tokens)}")
    records = [stream_record(len(s.tokens), start, s.first, s.end) for s in sinks]
    record = run_record(records, end - start)
    if probe is not None:
        record["probe_peak"] = sinks[0].peak
    return [sink.tokens for sink in sinks], record


def equal_up_to_eos(ours: Sequence[int], theirs: Sequence[int], eos: frozenset[int]) -> bool:
    """Greedy streams agree: equal token by token until the first EOS (one side may stop
    there, the other goes on)."""
    for mine, other in zip(ours, theirs, strict=False):
        if mine != other:
            return False
        if mine in eos:
            return True
    return True


class _Countdown:
    """Set once `count` streams have finished; the sinks never block the engine thread."""

    def __init__(self, count: int) -> None:
        self._left = count
        self._lock = threading.Lock()
        self._event = threading.Event()

    def finished_one(self) -> None:
        with self._lock:
            self._left -= 1
            if self._left == 0:
                self._event.set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


class _Sink:
    """Takes every token (EOS too, never stops early); times the first and the last."""

    def __init__(self, done: _Countdown, probe: Probe | None) -> None:
        self.done = done
        self.probe = probe
        self.peak = 0
        self.tokens: list[int] = []
        self.first: float | None = None
        self.end = 0.0
        self.reason = ""

    def on_token(self, sampled: Any) -> str | None:
        if self.first is None:
            self.first = time.perf_counter()
        self.tokens.append(sampled.token)
        if self.probe is not None:
            self.peak = max(self.peak, self.probe())
        return None

    def on_finish(self, reason: str) -> None:
        self.end = time.perf_counter()
        self.reason = reason
        self.done.finished_one()


def progress(label: str, result: dict[str, Any]) -> None:
    print(
        f"{label}: {result['aggregate_tokens_per_s']:6.1f} tok/s aggregate, "
        f"{result['per_stream_tokens_per_s']:5.1f} per stream, "
        f"TTFT p50 {result['ttft_p50_s'] * 1000:5.0f} ms max {result['ttft_max_s'] * 1000:5.0f}, "
        f"wall {result['wall_s']:5.1f} s",
        flush=True,
    )


def median_of(runs: Sequence[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def rotated(items: Sequence[Any], round_index: int) -> list[Any]:
    """`items` starting at round_index (mod len): each round runs the variants in another
    order, so drift on a shared machine hits every variant."""
    shift = round_index % len(items)
    return [*items[shift:], *items[:shift]]
