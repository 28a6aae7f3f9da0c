"""`turnout_spend_usd_total{team, key, model, deployment}` and
`turnout_unpriced_requests_total{model, deployment}`, kept as plain sums and written out
when `/metrics` is asked for.

Every request adds to them, one series per deployment it called. A prometheus_client
`Counter` child's `inc` checks its amount and takes a lock (~1.5 µs on this project's
shared cores); a dict's float is added in a tenth of that, on the event loop that alone
adds to it (issue 20: spend accounting within 20 µs a request, a failover's two
deployments included). A scrape copies the sums in one step (`list(dict.items())` runs
without letting another thread in) and yields them as counter families."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from policies.pricing.cost import RequestCost

SPEND_HELP = (
    "What requests cost in US dollars, from the usage their upstream calls reported "
    "(every billed attempt), per deployment called; unpriced calls add nothing here."
)
UNPRICED_HELP = (
    "Requests that called (and were billed by) a deployment with no known price: "
    "their cost is unknown, not $0."
)


class SpendSeries(Collector):
    """The spend counters of one registry. Keys are labelled by their id (the log's
    `key`: 12 hex digits of the key's digest, never the key), teams by name: both
    configured, so as bounded as the models."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._usd: dict[tuple[str, str, str, str], float] = {}
        self._unpriced: dict[tuple[str, str], int] = {}
        registry.register(self)

    def add(self, team: str, key: str, model: str, cost: RequestCost) -> None:
        """One finished request's cost, split by the deployments it called."""
        for share in cost.shares:
            usd = share.usd
            if usd is None:
                unpriced = self._unpriced
                series = (model, share.label)
                unpriced[series] = unpriced.get(series, 0) + 1
            elif usd > 0:
                spent = self._usd
                labels = (team, key, model, share.label)
                spent[labels] = spent.get(labels, 0.0) + usd

    def describe(self) -> list[Metric]:
        return [
            CounterMetricFamily("turnout_spend_usd", SPEND_HELP),
            CounterMetricFamily("turnout_unpriced_requests", UNPRICED_HELP),
        ]

    def collect(self) -> Iterator[Metric]:
        spend = CounterMetricFamily(
            "turnout_spend_usd", SPEND_HELP, labels=("team", "key", "model", "deployment")
        )
        for labels, usd in list(self._usd.items()):
            spend.add_metric(labels, usd)
        yield spend
        unpriced = CounterMetricFamily(
            "turnout_unpriced_requests", UNPRICED_HELP, labels=("model", "deployment")
        )
        for series, count in list(self._unpriced.items()):
            unpriced.add_metric(series, count)
        yield unpriced
