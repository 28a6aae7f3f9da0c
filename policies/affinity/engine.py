"""Affinity routing for one process: the per-deployment prefix records, the session pins
(in the state store, so replicas sharing Redis share them), the load figures, and the
decision (policies/affinity/choice.py) put together. Explain asks for the same decision
without recording anything."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from policies.affinity.choice import Candidate, Choice, choose, rendezvous
from policies.affinity.key import AffinityKey
from policies.affinity.record import PrefixRecord
from policies.state.base import StateStore, StateUnavailable

# A target's load as its own queue says (a local sampler's), and a backend's published
# load report (providers: `load_report()`: waiting, running, fresh), where there is one.
LocalLoad = Callable[[str], int | None]
Reports = Callable[[str], Any]


@dataclass(frozen=True, slots=True)
class Decision:
    """What explain shows: the choice and the figures behind it."""

    choice: Choice
    candidates: tuple[Candidate, ...]
    pinned: str | None
    in_flight: Mapping[str, int]
    backend: Mapping[str, int]  # waiting + running, from fresh load reports


class AffinityRouter:
    def __init__(
        self,
        store: StateStore,
        local_load: LocalLoad,
        reports: Reports | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._local_load = local_load
        self._reports = reports
        self._clock = clock
        self._records: dict[str, PrefixRecord] = {}  # by deployment label

    async def decide(self, labels: Sequence[str], key: AffinityKey) -> Decision:
        """The choice among `labels` for the request `key` describes; nothing recorded."""
        try:
            in_flight = await self._store.in_flight(labels)
        except StateUnavailable:
            in_flight = {}
        pinned = await self._pin(key)
        backend = self._backend(labels)
        candidates = []
        for label in labels:
            record = self._records.get(label)
            load = max(in_flight.get(label, 0), backend.get(label, 0), self._local_load(label) or 0)
            candidates.append(
                Candidate(
                    label,
                    record.matched(key.blocks) if record is not None else 0,
                    load,
                    rendezvous(key.anchor, label),
                )
            )
        choice = choose(candidates, pinned if pinned in labels else None, key.settings.max_load)
        return Decision(choice, tuple(candidates), pinned, in_flight, backend)

    async def order(self, labels: Sequence[str], key: AffinityKey) -> tuple[str, ...]:
        """The order to try `labels` in; the prompt recorded (and the session pinned) on
        the first, which `served` moves should another one answer."""
        decision = await self.decide(labels, key)
        winner = decision.choice.order[0]
        matched = next(c.matched for c in decision.candidates if c.label == winner)
        await self.served(key, winner, pinned=decision.pinned, matched=matched)
        return decision.choice.order

    async def served(
        self, key: AffinityKey, label: str, pinned: str | None = None, matched: int | None = None
    ) -> None:
        """`label` was sent (or answered) the request: its record holds the prompt's
        blocks (`matched` of them already), and the session is pinned to it."""
        record = self._records.get(label)
        if record is None:
            record = self._records[label] = PrefixRecord(key.settings.max_blocks)
        record.record(key.blocks, matched)
        if key.session is None or pinned == label:
            return
        # Pins are an optimisation: without the store, the prefix record still routes.
        with contextlib.suppress(StateUnavailable):
            await self._store.pin_session(
                key.session.digest, label, self._clock(), key.settings.session_ttl_s
            )

    async def _pin(self, key: AffinityKey) -> str | None:
        if key.session is None:
            return None
        try:
            return await self._store.session_pin(key.session.digest, self._clock())
        except StateUnavailable:
            return None

    def _backend(self, labels: Sequence[str]) -> dict[str, int]:
        """Waiting + running of each deployment whose backend publishes a fresh report."""
        figures: dict[str, int] = {}
        if self._reports is None:
            return figures
        for label in labels:
            report = self._reports(label)
            if report is not None and getattr(report, "fresh", False):
                figures[label] = int(report.waiting) + int(report.running)
        return figures
