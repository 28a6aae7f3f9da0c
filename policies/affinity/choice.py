"""The affinity choice, pure: given each deployment's matched prefix, load and the
session's pin, which deployment goes first and why, and the order of the rest.

1. A session pinned to a deployment that is not overloaded goes there.
2. Else the longest matched prefix wins;
3. ties (and cold prefixes) go by rendezvous hashing of the anchor over deployment labels,
   so Turnout processes that share nothing pick the same deployment for the same prompt.
4. Bounded load (consistent hashing with bounded loads, Mirrokni et al.): a deployment is
   overloaded when one more call would put it above ceil(max_load * (total + 1) / n);
   it is passed over for the next in the same order. The +1 keeps an idle pool eligible.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

PINNED = "pinned"
LONGEST_PREFIX = "longest prefix"
RENDEZVOUS = "rendezvous"
SPILLED = "spilled due to load"


@dataclass(frozen=True, slots=True)
class Candidate:
    label: str
    matched: int  # leading prompt blocks this deployment was sent
    load: int  # the larger of Turnout's calls in flight and the backend's own queue
    score: int  # rendezvous weight for this request's anchor


@dataclass(frozen=True, slots=True)
class Choice:
    order: tuple[str, ...]  # labels, the winner first
    reason: str  # PINNED, LONGEST_PREFIX, RENDEZVOUS or SPILLED (from what, in `spilled`)
    capacity: int  # the load above which a deployment is passed over
    spilled: tuple[str, ...] = ()  # preferred deployments passed over for their load


def rendezvous(anchor: bytes, label: str) -> int:
    """Highest-random-weight: each (anchor, deployment) pair's own stable weight."""
    digest = hashlib.blake2b(anchor + label.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def capacity(loads: Sequence[int], max_load: float) -> int:
    return math.ceil(max_load * (sum(loads) + 1) / len(loads))


def choose(candidates: Sequence[Candidate], pinned: str | None, max_load: float) -> Choice:
    cap = capacity([c.load for c in candidates], max_load)
    preference = sorted(candidates, key=lambda c: (c.label != pinned, -c.matched, -c.score))
    spilled: list[str] = []
    winner: Candidate | None = None
    for candidate in preference:
        if candidate.load + 1 <= cap:
            winner = candidate
            break
        spilled.append(candidate.label)
    if winner is None:  # every one over (backend queues beyond Turnout's own): least loaded
        winner = min(preference, key=lambda c: c.load)
    others = (c for c in candidates if c is not winner)
    rest = sorted(others, key=lambda c: (c.load + 1 > cap, c.load, -c.score))
    order = (winner.label, *(c.label for c in rest))
    return Choice(order, _reason(winner, pinned, spilled, preference), cap, tuple(spilled))


def _reason(
    winner: Candidate, pinned: str | None, spilled: Sequence[str], preference: Sequence[Candidate]
) -> str:
    if spilled:
        return SPILLED
    if winner.label == pinned:
        return PINNED
    if winner.matched > 0 and (len(preference) < 2 or preference[1].matched < winner.matched):
        return LONGEST_PREFIX
    return RENDEZVOUS


def loads_of(labels: Sequence[str], *sources: Mapping[str, int]) -> list[int]:
    return [max((s.get(label, 0) for s in sources), default=0) for label in labels]
