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
from typing import Any

from policies.affinity.engine import AffinityRouter, Decision
from policies.affinity.key import AffinityKey
from policies.plan import Target
from policies.policy_config import Price, Strategy
from policies.state.base import StateStore, StateUnavailable
from providers.base import CachedPromptTokens

LoadOf = Callable[[Target], int | None]  # a local sampler's own queue depth, if it has one
# A deployment's backend load report (`Provider.load_report()`: waiting, running, fresh),
# None where its backend publishes none.
ReportOf = Callable[[Target], Any]
PriceOf = Callable[[Target], Price | None]
# A deployment's `cached_prompt_tokens` hook (providers/base.py), None where it has none.
ProbeOf = Callable[[Target], CachedPromptTokens | None]


class Orderer:
    def __init__(
        self,
        store: StateStore,
        rng: random.Random,
        load_of: LoadOf,
        report_of: ReportOf | None = None,
        price_of: PriceOf | None = None,
        probe_of: ProbeOf | None = None,
    ) -> None:
        """`price_of`: a deployment's price as requests are charged (policies/pricing/:
        its own, the config's or the shipped table's); none: its own `price` only.
        `probe_of`: what affinity asks a backend about its own prefix cache, where it can
        (policies/affinity/exact.py); none: the record's estimate for every deployment."""
        self._price_of: PriceOf = price_of or (lambda target: target.deployment.price)
        self._store = store
        self._rng = rng
        self._load_of = load_of
        self._by_label: dict[str, Target] = {}  # the targets affinity has seen, by label
        self._probe_of = probe_of
        # Each seen target's hook, looked up once (a decision reads it per deployment).
        self._probes: dict[str, CachedPromptTokens] = {}  # only those that have one
        self._affinity = AffinityRouter(
            store,
            lambda label: load_of(self._by_label[label]),
            (lambda label: report_of(self._by_label[label])) if report_of is not None else None,
            probes=self._probes,
        )

    async def order(
        self, targets: Sequence[Target], strategy: Strategy, affinity: AffinityKey | None = None
    ) -> list[Target]:
        """`affinity`: the request's key (policies/affinity/key.py), for `strategy: affinity`."""
        if strategy is Strategy.PRIORITY or len(targets) < 2:
            return list(targets)
        ordered: list[Target] = []
        for _, group in itertools.groupby(targets, key=lambda t: t.model_name):
            # Affinity records the prompt and pins the session on the model's own winner
            # only: a fallback model's is ordered alike but would take the pin from it.
            record = not ordered
            ordered.extend(await self._order_group(list(group), strategy, affinity, record))
        return ordered

    async def decide(self, targets: Sequence[Target], affinity: AffinityKey) -> Decision:
        """The affinity decision over the first model's deployments, recording nothing."""
        group = [t for t in targets if t.model_name == targets[0].model_name]
        return await self._affinity.decide(self._labels(group), affinity, group[0].model_name)

    async def served(self, affinity: AffinityKey, target: Target) -> None:
        """`target` answered a request other than the one `order` put first (a breaker
        open, a failure): the prompt's record and the session's pin follow it."""
        await self._affinity.served(affinity, target.label, pool=target.model_name)

    def _labels(self, group: Sequence[Target]) -> list[str]:
        for target in group:
            self._seen(target)
        return [t.label for t in group]

    def _seen(self, target: Target) -> None:
        if target.label in self._by_label:
            return
        self._by_label[target.label] = target
        probe = self._probe_of(target) if self._probe_of is not None else None
        if probe is not None:
            self._probes[target.label] = probe

    async def _order_group(
        self,
        group: list[Target],
        strategy: Strategy,
        affinity: AffinityKey | None,
        record: bool = True,
    ) -> list[Target]:
        if len(group) < 2:
            return group
        if strategy is Strategy.AFFINITY:
            names = [t.label for t in group]
            by_label = dict(zip(names, group, strict=True))
            if affinity is None or len(by_label) < len(group):  # labels must name one each
                return group
            for label, target in by_label.items():
                if label not in self._by_label:
                    self._seen(target)
            if record:
                order = await self._affinity.order(names, affinity, group[0].model_name)
            else:
                decision = await self._affinity.decide(names, affinity, group[0].model_name)
                order = decision.choice.order
            return [by_label[label] for label in order]
        labels = [t.label for t in group]
        if strategy is Strategy.WEIGHTED:
            return weighted_order(group, self._rng)
        if strategy is Strategy.COST:
            return sorted(group, key=lambda target: price_per_token(self._price_of(target)))
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


def price_per_token(price: Price | None) -> float:
    """Prompt and completion price together; a deployment without a price sorts last."""
    return math.inf if price is None else price.prompt + price.completion
