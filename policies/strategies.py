"""Routing strategies: the order in which a model's deployments are tried.

Each model's deployments are ordered among themselves; the chain of fallback models keeps
its order (a fallback model is tried only after the model asked for). Capability filtering
and breakers apply on top of this order, in the dispatcher. A strategy that needs the
shared statistics while the store is unreachable falls back to config order."""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Mapping, Sequence

from policies.plan import Target
from policies.policy_config import Strategy
from policies.state.base import StateStore, StateUnavailable

LoadOf = Callable[[Target], int | None]  # a local sampler's own queue depth, if it has one


class Orderer:
    def __init__(self, store: StateStore, rng: random.Random, load_of: LoadOf) -> None:
        self._store = store
        self._rng = rng
        self._load_of = load_of

    async def order(self, targets: Sequence[Target], strategy: Strategy) -> list[Target]:
        if strategy is Strategy.PRIORITY or len(targets) < 2:
            return list(targets)
        ordered: list[Target] = []
        for _, group in itertools.groupby(targets, key=lambda t: t.model_name):
            ordered.extend(await self._order_group(list(group), strategy))
        return ordered

    async def _order_group(self, group: list[Target], strategy: Strategy) -> list[Target]:
        if len(group) < 2:
            return group
        labels = [t.label for t in group]
        if strategy is Strategy.WEIGHTED:
            return weighted_order(group, self._rng)
        if strategy is Strategy.COST:
            return sorted(group, key=price_per_token)
        try:
            if strategy is Strategy.LEAST_BUSY:
                busy = await self._store.in_flight(labels)
                return sorted(group, key=lambda t: max(busy.get(t.label, 0), self._load_of(t) or 0))
            latency = await self._store.latencies(labels)
        except StateUnavailable:
            return group  # the statistics live in the store: without it, config order
        return two_choices_order(group, latency, self._rng)


def weighted_order(group: Sequence[Target], rng: random.Random) -> list[Target]:
    """A random order in which each deployment comes first in proportion to its weight
    (Efraimidis-Spirakis: sort by u^(1/w), u uniform)."""
    return sorted(group, key=lambda t: rng.random() ** (1.0 / t.deployment.weight), reverse=True)


def two_choices_order(
    group: Sequence[Target], latency: Mapping[str, float], rng: random.Random
) -> list[Target]:
    """Power of two choices, repeated: of two deployments drawn at random, the one with the
    lower EWMA latency goes next. Unmeasured deployments count as fastest, so they get
    measured. Two random choices, not the global minimum, so that many routers sharing the
    same statistics do not all pile onto the one fastest deployment at once."""
    remaining = list(group)
    ordered: list[Target] = []
    while len(remaining) > 1:
        a, b = rng.sample(range(len(remaining)), 2)
        la = latency.get(remaining[a].label, 0.0)
        lb = latency.get(remaining[b].label, 0.0)
        ordered.append(remaining.pop(a if la <= lb else b))
    return ordered + remaining


def price_per_token(target: Target) -> float:
    """Prompt and completion price together; a deployment without a price sorts last."""
    price = target.deployment.price
    return math.inf if price is None else price.prompt + price.completion
