"""Each deployment's price, by label: its own `price:`, else the config's `prices:` for
the model name it is called with, else the shipped table's for a hosted vendor's model
(kinds `openai` and `anthropic`). Anything else is unpriced: its cost is reported as
unknown, never as $0 (a self-hosted or local model is priced only where the config says,
e.g. for internal charge-back)."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from policies.config import TurnoutConfig
from policies.policy_config import Price
from policies.pricing.table import PriceTable

# Kinds that call a hosted vendor's models by their public names, which the table lists.
_TABLE_KINDS = frozenset({"openai", "anthropic"})


class PriceBook:
    def __init__(self, prices: Mapping[str, Price | None], table: PriceTable | None = None):
        self._prices = MappingProxyType(dict(prices))
        self.table = table

    @classmethod
    def from_config(cls, config: TurnoutConfig, table: PriceTable) -> PriceBook:
        prices: dict[str, Price | None] = {}
        for route in config.models.values():
            for deployment in route.deployments:
                if deployment.label in prices and prices[deployment.label] is not None:
                    continue  # listed by two models: the first priced entry stands
                kind = getattr(config.providers[deployment.provider], "kind", None)
                price = deployment.price or config.prices.get(deployment.model)
                if price is None and kind in _TABLE_KINDS:
                    price = table.get(deployment.model)
                prices[deployment.label] = price
        return cls(prices, table)

    def price(self, label: str | None) -> Price | None:
        return None if label is None else self._prices.get(label)

    def unpriced(self) -> list[str]:
        """The deployments whose calls have no known price."""
        return sorted(label for label, price in self._prices.items() if price is None)
