"""What a serving engine says about its own load: requests queued and running, and how full
its KV cache is, read from its Prometheus `/metrics` (`providers.load_metrics` scrapes it).

Each engine names these figures its own way (`ENGINE_METRICS`); a pure parser turns one
scrape's text into a `LoadReport`, so the names are testable without a server.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from enum import StrEnum

from prometheus_client.parser import text_string_to_metric_families


class LoadFormat(StrEnum):
    VLLM = "vllm"
    SGLANG = "sglang"
    LLAMACPP = "llamacpp"


@dataclass(frozen=True, slots=True)
class EngineMetrics:
    """The sample names of one engine's waiting and running requests and KV-cache use
    (a fraction, 0..1); the first name found of each tuple is read."""

    waiting: tuple[str, ...]
    running: tuple[str, ...]
    kv_cache: tuple[str, ...]


ENGINE_METRICS = {
    # vLLM renamed gpu_cache_usage_perc to kv_cache_usage_perc (v0.10); both are read.
    LoadFormat.VLLM: EngineMetrics(
        waiting=("vllm:num_requests_waiting",),
        running=("vllm:num_requests_running",),
        kv_cache=("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
    ),
    LoadFormat.SGLANG: EngineMetrics(
        waiting=("sglang:num_queue_reqs",),
        running=("sglang:num_running_reqs",),
        kv_cache=("sglang:token_usage",),
    ),
    # llama-server --metrics; its KV-cache ratio is gone from recent builds (then None).
    LoadFormat.LLAMACPP: EngineMetrics(
        waiting=("llamacpp:requests_deferred",),
        running=("llamacpp:requests_processing",),
        kv_cache=("llamacpp:kv_cache_usage_ratio",),
    ),
}


class LoadParseError(ValueError):
    """The text is not Prometheus exposition, or lacks the engine's request counts."""


@dataclass(frozen=True, slots=True)
class LoadReport:
    """One successful scrape. `scraped_at` is `time.monotonic()`; the report is `fresh`
    until `max_age` seconds after it (the scraper sets 3 scrape intervals)."""

    waiting: int
    running: int
    kv_cache_usage: float | None
    scraped_at: float
    max_age: float

    @property
    def age(self) -> float:
        return time.monotonic() - self.scraped_at

    @property
    def fresh(self) -> bool:
        return self.age <= self.max_age

    @property
    def requests(self) -> int:
        """Waiting and running: the backend's own count of the work it holds."""
        return self.waiting + self.running


def parse_load(text: str, fmt: LoadFormat, *, scraped_at: float, max_age: float) -> LoadReport:
    """The engine's figures in `text`. Several samples of one name (one per model, or per
    tensor-parallel rank) are summed for request counts; the highest KV-cache use counts."""
    names = ENGINE_METRICS[fmt]
    wanted = {*names.waiting, *names.running, *names.kv_cache}
    # Only the wanted samples' lines reach the parser: an engine's /metrics is mostly
    # histograms, and parsing them all costs milliseconds of the event loop per scrape.
    prefixes = tuple(wanted)
    kept = "\n".join(line for line in text.splitlines() if line.startswith(prefixes))
    values: dict[str, list[float]] = {}
    try:
        for family in text_string_to_metric_families(kept + "\n"):
            for sample in family.samples:
                if sample.name in wanted:
                    values.setdefault(sample.name, []).append(float(sample.value))
    except ValueError as exc:  # the parser's only complaint about malformed text
        # The parser's words quote the offending line, which may be as long as the body.
        raise LoadParseError(f"not Prometheus text: {str(exc)[:200]}") from None
    for name, found in values.items():  # NaN or Inf is no count (and round() raises on it)
        if not all(math.isfinite(v) for v in found):
            raise LoadParseError(f"{name} is not a finite number")

    def first(candidates: tuple[str, ...]) -> list[float] | None:
        return next((values[n] for n in candidates if n in values), None)

    waiting, running = first(names.waiting), first(names.running)
    if waiting is None or running is None:
        raise LoadParseError(f"no {names.waiting[0]} / {names.running[0]} in the answer")
    kv = first(names.kv_cache)
    return LoadReport(
        waiting=round(sum(waiting)),
        running=round(sum(running)),
        kv_cache_usage=max(kv) if kv else None,
        scraped_at=scraped_at,
        max_age=max_age,
    )
