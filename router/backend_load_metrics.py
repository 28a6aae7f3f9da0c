"""`/metrics` series for what backends say of their own load (`load_metrics:` on a
provider): their queue, running requests and KV-cache use per deployment, the age of the
last scrape and the failed scrapes. Read from the providers when `/metrics` is asked for,
so they are as current as the last scrape and follow config reloads."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from providers.load_report import LoadReport
from router.gateway import Gateway


@dataclass(frozen=True, slots=True)
class BackendLoad:
    deployment: str
    report: LoadReport | None  # the last good scrape, fresh or not
    failures: int


def backend_loads(gateway: Gateway) -> list[BackendLoad]:
    """One row per configured deployment whose provider scrapes `load_metrics:`."""
    rows: list[BackendLoad] = []
    seen: set[str] = set()
    for route in gateway.config.models.values():
        for deployment in route.deployments:
            provider = gateway.providers.get(deployment.provider)
            label = deployment.label
            if provider is None or label in seen:
                continue
            failures = provider.load_scrape_failures()
            if failures is None:
                continue
            seen.add(label)
            rows.append(BackendLoad(label, provider.load_report(stale=True), failures))
    return rows


class BackendLoadCollector(Collector):
    """Yields the rows `update` last gave it (updated just before each exposition)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._rows: Sequence[BackendLoad] = ()
        registry.register(self)

    def update(self, rows: Iterable[BackendLoad]) -> None:
        self._rows = tuple(rows)

    def describe(self) -> list[Metric]:
        return []  # its series come and go with the config: checked at collection only

    def collect(self) -> Iterator[Metric]:
        labels = ["deployment"]
        waiting = GaugeMetricFamily(
            "turnout_backend_requests_waiting",
            "Requests queued inside the backend, by its last fresh scrape.",
            labels=labels,
        )
        running = GaugeMetricFamily(
            "turnout_backend_requests_running",
            "Requests running inside the backend, by its last fresh scrape.",
            labels=labels,
        )
        kv = GaugeMetricFamily(
            "turnout_backend_kv_cache_usage",
            "The backend's KV-cache use (0..1), by its last fresh scrape.",
            labels=labels,
        )
        age = GaugeMetricFamily(
            "turnout_backend_load_age_seconds",
            "Seconds since the backend's load was last scraped successfully.",
            labels=labels,
        )
        failures = CounterMetricFamily(
            "turnout_backend_load_scrape_failures",
            "Scrapes of the backend's load metrics that failed.",
            labels=labels,
        )
        for row in self._rows:
            failures.add_metric([row.deployment], row.failures)
            report = row.report
            if report is None:
                continue
            age.add_metric([row.deployment], report.age)
            if not report.fresh:
                continue  # stale figures are not the backend's load now
            waiting.add_metric([row.deployment], report.waiting)
            running.add_metric([row.deployment], report.running)
            if report.kv_cache_usage is not None:
                kv.add_metric([row.deployment], report.kv_cache_usage)
        yield from (waiting, running, kv, age, failures)
