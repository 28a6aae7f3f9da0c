"""Affinity routing for one process: the per-deployment prefix records, the session pins
(in the state store, so replicas sharing Redis share them), the load figures, each pool's
window of recent decisions (policies/affinity/share.py), and the decision
(policies/affinity/choice.py) put together. Explain asks for the same decision without
recording anything.

A turn spilled off its session's pinned deployment for load leaves the pin where it was:
the spill is for now, the conversation's cache is at home, and the next turn goes back
there once it has room (spills of a pinned turn go to the deployment holding the longest
part of the conversation, so a session kept off home stays on one second deployment)."""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any, NamedTuple

from policies.affinity.choice import (
    KV_FULL,
    Candidate,
    Choice,
    choose,
    rendezvous,
    share_capacity,
)
from policies.affinity.exact import backend_figures, exact_blocks
from policies.affinity.key import AffinityKey
from policies.affinity.record import PrefixRecord
from policies.affinity.share import RecentShare
from policies.state.base import StateStore, StateUnavailable
from providers.base import CachedPromptTokens as Probe

# A target's load as its own queue says (a local sampler's), and a backend's published
# load report (providers: `load_report()`: waiting, running, fresh), where there is one.
LocalLoad = Callable[[str], int | None]
Reports = Callable[[str], Any]
_NONE: Mapping[str, tuple[int, int]] = MappingProxyType({})  # no backend's figure


# Share windows kept at once (each holds up to a few hundred recent decisions).
MAX_POOLS = 256
# Rendezvous weights remembered (a prefix's weight over a pool's deployments).
MAX_WEIGHTS = 4096


class Decision(NamedTuple):
    """What explain shows: the choice and the figures behind it (a NamedTuple: one is
    built per request, faster than a frozen dataclass)."""

    choice: Choice
    candidates: tuple[Candidate, ...]
    pinned: str | None
    in_flight: Mapping[str, int]
    backend: Mapping[str, int]  # waiting + running, from fresh load reports
    prefix_recent: int = 0  # this prompt's anchor's decisions in the recent window
    hot: bool = False  # the prefix is hot: spread for its share even where not held
    # (held tokens, prompt tokens) by label where the backend's prefix cache said (their
    # candidates' `matched` is that figure, policies/affinity/exact.py), else the record's.
    exact: Mapping[str, tuple[int, int]] = _NONE


class AffinityRouter:
    def __init__(
        self,
        store: StateStore,
        local_load: LocalLoad,
        reports: Reports | None = None,
        clock: Callable[[], float] = time.time,
        probes: Mapping[str, Probe] | None = None,
    ) -> None:
        """`probes`: by label, the deployments whose backend says what its prefix cache
        holds (`cached_prompt_tokens`, providers/base.py); the others' matched prefix is
        the record's."""
        self._store = store
        self._local_load = local_load
        self._reports = reports
        self._clock = clock
        self._probes: Mapping[str, Probe] = probes if probes is not None else {}
        self._records: dict[str, PrefixRecord] = {}  # by deployment label
        self._shares: dict[tuple[str, ...], RecentShare] = {}  # by the pool's labels
        self._slots: dict[str, int] = {}  # by label: the most its backend reported running
        # Rendezvous weights by (anchor, the pool's labels): a prefix comes back turn after
        # turn, and hashing it with each label is a few µs of the decision's 50.
        self._weights: dict[tuple[bytes, tuple[str, ...]], tuple[int, ...]] = {}

    async def decide(self, labels: Sequence[str], key: AffinityKey, pool: str = "") -> Decision:
        """The choice among `labels` for the request `key` describes; nothing recorded.
        `pool`: the model they serve; a session is pinned once per model (see `_pin_id`)."""
        return (await self._decide(labels, key, pool))[0]

    async def order(
        self, labels: Sequence[str], key: AffinityKey, pool: str = ""
    ) -> tuple[str, ...]:
        """The order to try `labels` in; the prompt recorded (and the session pinned) on
        the first, which `served` moves should another one answer."""
        decision, share = await self._decide(labels, key, pool)
        choice = decision.choice
        winner = choice.order[0]
        pinned = decision.pinned
        share.add(winner, key.anchor, len(key.blocks), pinned is None or pinned not in labels)
        matched: int | None = 0
        for candidate in decision.candidates:
            if candidate.label == winner:
                matched = candidate.matched
                break
        if winner in decision.exact:  # the backend's figure, not the record's: looked up
            matched = None
        # Spilled off its pin for load: the pin stays home (see the module's docstring).
        keep = decision.pinned is not None and decision.pinned in choice.spilled
        await self.served(
            key, winner, pinned=decision.pinned, matched=matched, keep_pin=keep, pool=pool
        )
        return choice.order

    async def _decide(
        self, labels: Sequence[str], key: AffinityKey, pool: str
    ) -> tuple[Decision, RecentShare]:
        try:
            in_flight = await self._store.in_flight(labels)
        except StateUnavailable:
            in_flight = {}
        pinned = await self._pin(key, pool)
        backend, full = self._backend(labels)
        # Asked only where some deployment has the hook: a pool of remote APIs awaits
        # nothing and pays a dict lookup a deployment at most (the 50 µs budget).
        probes, body = self._probes, key.body
        asks = [(n, probes[n]) for n in labels if n in probes] if probes and body else None
        exact = await backend_figures(asks, body) if asks and body else None
        pool_labels = tuple(labels)
        share = self._share(pool_labels)
        weights = self._weights.get((key.anchor, pool_labels))
        if weights is None:
            weights = tuple(rendezvous(key.anchor, label) for label in labels)
            if len(self._weights) >= MAX_WEIGHTS:
                self._weights.clear()  # bounded; recomputed as prefixes come back
            self._weights[(key.anchor, pool_labels)] = weights
        recent, footprint, placed = share.counts, share.footprint, share.placed
        anchor, slots = key.anchor, self._slots
        homes = share.homes(anchor)
        candidates = []
        for label, weight in zip(labels, weights, strict=True):
            record = self._records.get(label)
            load = max(in_flight.get(label, 0), backend.get(label, 0), self._local_load(label) or 0)
            held = exact.get(label) if exact is not None else None
            if held is not None:
                matched = exact_blocks(held[0], held[1], len(key.blocks))
            else:
                matched = record.matched(key.blocks) if record is not None else 0
            candidates.append(
                Candidate(
                    label,
                    matched,
                    load,
                    weight,
                    recent.get(label, 0),
                    label in full,
                    footprint.get(label, 0),
                    homes[label][0] if label in homes else 0,
                    placed.get(label, 0),
                    slots.get(label, 0),
                )
            )
        pin = pinned if pinned in labels else None
        prefix = share.anchors.get(anchor, 0)
        hot = share.is_hot(prefix)
        settings = key.settings
        choice = choose(
            candidates,
            pin,
            settings.max_load,
            share.size,
            spread=hot,
            blocks=len(key.blocks),
            headroom=settings.held_headroom,
            placed_cap=share_capacity(share.size, len(labels), settings.max_load),
        )
        decision = Decision(
            choice, tuple(candidates), pinned, in_flight, backend, prefix, hot, exact or _NONE
        )
        return decision, share

    async def served(
        self,
        key: AffinityKey,
        label: str,
        pinned: str | None = None,
        matched: int | None = None,
        keep_pin: bool = False,
        pool: str = "",
    ) -> None:
        """`label` was sent (or answered) the request: its record holds the prompt's
        blocks (`matched` of them already), and the session is pinned to it (unless
        `keep_pin`: the pin stays where it is)."""
        record = self._records.get(label)
        if record is None:
            record = self._records[label] = PrefixRecord(key.settings.max_blocks)
        record.record(key.blocks, matched)
        if key.session is None or pinned == label or keep_pin:
            return
        # Pins are an optimisation: without the store, the prefix record still routes.
        with contextlib.suppress(StateUnavailable):
            await self._store.pin_session(
                _pin_id(key.session.digest, pool), label, self._clock(), key.settings.session_ttl_s
            )

    def _share(self, pool: tuple[str, ...]) -> RecentShare:
        share = self._shares.get(pool)
        if share is None:
            # One window per set of deployments a plan offers; a client narrowing its plan
            # (router.only / ignore, rules) chooses the set: bounded, the oldest dropped.
            if len(self._shares) >= MAX_POOLS:
                del self._shares[next(iter(self._shares))]
            share = self._shares[pool] = RecentShare(len(pool))
        return share

    async def _pin(self, key: AffinityKey, pool: str) -> str | None:
        if key.session is None:
            return None
        try:
            return await self._store.session_pin(_pin_id(key.session.digest, pool), self._clock())
        except StateUnavailable:
            return None

    def _backend(self, labels: Sequence[str]) -> tuple[dict[str, int], frozenset[str]]:
        """Waiting + running of each deployment whose backend publishes a fresh report,
        and those whose KV cache it reports at or above KV_FULL (choice.py, rule 6)."""
        figures: dict[str, int] = {}
        if self._reports is None:
            return figures, frozenset()
        full = []
        slots = self._slots
        for label in labels:
            report = self._reports(label)
            if report is not None and getattr(report, "fresh", False):
                running = int(report.running)
                figures[label] = int(report.waiting) + running
                if running > slots.get(label, 0):
                    slots[label] = running
                usage = getattr(report, "kv_cache_usage", None)
                if usage is not None and usage >= KV_FULL:
                    full.append(label)
        return figures, frozenset(full)


def _pin_id(session: str, pool: str) -> str:
    """One pin per session and model: a client (Claude Code) that sends one session id to
    two models (its main and its small one) must not have each model's turn move the
    other's pin to a deployment outside that model's pool."""
    if not pool:
        return session
    return f"{session}:{hashlib.blake2b(pool.encode(), digest_size=6).hexdigest()}"
