"""The price table shipped with Turnout: hosted models' list prices by the model name a
backend is called with, in USD per million tokens, with where and when they were taken.
`scripts/update-prices.py` rebuilds `prices.json` from LiteLLM's community-maintained
list; the config's `prices:` and a deployment's own `price:` are over it."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType

from policies.policy_config import Price


@dataclass(frozen=True, slots=True)
class PriceTable:
    source: str
    version: str
    taken: str  # the date the prices were taken (ISO)
    prices: Mapping[str, Price]

    def get(self, model: str) -> Price | None:
        return self.prices.get(model)


def shipped_table() -> PriceTable:
    """The table in this package's `prices.json` (read anew: a reload may follow an
    upgrade that brought a newer one)."""
    raw = json.loads(resources.files(__package__).joinpath("prices.json").read_text())
    prices = {name: Price(**fields) for name, fields in raw["models"].items()}
    return PriceTable(raw["source"], raw["version"], raw["taken"], MappingProxyType(prices))
