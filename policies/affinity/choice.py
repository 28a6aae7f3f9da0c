"""The affinity choice, pure: given each deployment's matched prefix, load and the
session's pin, which deployment goes first and why, and the order of the rest.

1. A session pinned to a deployment that is not overloaded goes there.
2. Else the longest matched prefix wins; of deployments holding it alike, the one that
   took this prefix most often in the recent window (`home`: a copy a spill made ages
   out of a cache unused, the home's does not), or for a hot prefix (`spread`) the one
   given the fewest recent placements, so a prefix every deployment holds is spread
   evenly rather than filling each in turn to its share.
3. Ties (and cold prefixes) go by rendezvous hashing of the anchor over deployment labels,
   so Turnout processes that share nothing pick the same deployment for the same prompt;
   but a prompt a deployment did not take recently is not placed where the cache
   footprint (blocks of the distinct prefixes it took in the window) is above the pool's
   mean while another is not (SGLang's router sends an unmatched prompt to the worker
   with the smallest tree): placing it there evicts another prompt, while a deployment
   under the mean has room. Rendezvous order among those under the mean keeps processes
   agreeing as far as their windows agree.
4. Bounded load (consistent hashing with bounded loads, Mirrokni et al.): a deployment is
   overloaded when one more call would put it above ceil(max_load * (total + 1) / n);
   it is passed over for the next in the same order. The +1 keeps an idle pool eligible.
   A deployment holding part of the prompt has headroom in proportion to it: it is
   overloaded only above cap + floor(headroom * cap * matched / prompt blocks), twice the
   cap for a prompt held whole at the default `held_headroom: 1`. Passing it over costs
   a cold prefill of the matched part elsewhere (and a copy in another cache, which
   evicts a prompt there), so the queue it may hold grows with the prefill it saves, as
   SGLang's router keeps affinity until the imbalance is large. And a deployment holding
   at least half of the prompt is never passed over for load while its load is below the
   most calls its backend has reported running at once (`slots`, from `load_metrics`):
   it has a free slot, so the request waits for nothing there, and a spill would only
   add the cold prefill and the copy. (At low load the cap is 1 or 2 calls, and without
   this a conversation left its cache for an idle replica with one call at home.) The
   share bounds (5.) still keep its share of requests near the mean.
5. Bounded share: calls in flight do not bound the share of requests (a replica holding a
   hot prefix answers faster, so it serves more at equal calls in flight). Of this
   process's last `window` decisions for the pool (policies/affinity/share.py), a
   deployment that already took ceil(max_load * window / n) is passed over alike, and so
   is one that took as many of the last `window` placements (`placed_cap`; a
   placement brings its conversation's later turns with it), except for a
   session pinned to it: its later turns are cheapest where its cache is, so the share
   is governed where conversations are placed (their first turn, or no session).
   Without `spread` (the prefix is not hot) the request passed over for its share of
   recent decisions goes only to a deployment holding its prefix, else stays: no copy
   made for a passing excess. A deployment over its share of placements has been given
   too many conversations for a while, not for a moment: the prefix may then go where it
   is not held, as a hot one does.
6. A full KV cache: a backend whose published KV-cache use (`load_metrics`) is at or above
   KV_FULL takes no request of which it holds less than half (a shared system prompt's
   head is not enough): the rest's KV would evict another tenant's and may preempt
   running requests. It still takes requests it mostly holds (a conversation's next
   turn adds little to its cache). When every deployment is passed over, the least loaded
   takes the request.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

PINNED = "pinned"
LONGEST_PREFIX = "longest prefix"
RENDEZVOUS = "rendezvous"
FOOTPRINT = "cache footprint"
SPILLED = "spilled due to load"
# The KV-cache use (0..1, as the engines publish it) at which a backend takes no new prefix.
KV_FULL = 0.9
# Why a deployment is passed over (`choose`).
_LOADED, _OVER_SHARE, _OVER_PLACEMENTS = 1, 2, 3


class Candidate(NamedTuple):
    """A NamedTuple, not a frozen dataclass: four are built per decision, and a tuple is
    built several times faster (the decision's budget is 50 µs)."""

    label: str
    matched: int  # leading prompt blocks this deployment was sent
    load: int  # the larger of Turnout's calls in flight and the backend's own queue
    score: int  # rendezvous weight for this request's anchor
    recent: int = 0  # decisions of this process's recent window that it won
    full: bool = False  # its backend's KV cache is at or above KV_FULL (rule 6)
    footprint: int = 0  # blocks of the distinct prefixes it took in the recent window
    home: int = 0  # decisions for this prompt's prefix (anchor) it took in the window
    placed: int = 0  # placements it took of the recent ones
    slots: int = 0  # the most calls its backend reported running at once (0: unknown)


class Choice(NamedTuple):
    order: tuple[str, ...]  # labels, the winner first
    # PINNED, LONGEST_PREFIX, RENDEZVOUS, FOOTPRINT or SPILLED (from what, in `spilled`)
    reason: str
    capacity: int  # the load above which a deployment is passed over
    spilled: tuple[str, ...] = ()  # preferred deployments passed over for their load
    share_capacity: int | None = None  # recent decisions above which one is passed over
    placement_capacity: int | None = None  # recent placements above which one is passed over


def rendezvous(anchor: bytes, label: str) -> int:
    """Highest-random-weight: each (anchor, deployment) pair's own stable weight."""
    digest = hashlib.blake2b(anchor + label.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def capacity(loads: Sequence[int], max_load: float) -> int:
    return capacity_of(sum(loads), len(loads), max_load)


def capacity_of(total: int, deployments: int, max_load: float) -> int:
    """Rule 4's cap from the pool's total load over its `deployments`."""
    return math.ceil(max_load * (total + 1) / deployments)


def overloaded(c: Candidate, cap: int, blocks: int, headroom: float) -> bool:
    """Rule 4: one more call would put `c` past its capacity (`cap`, more for the part of
    the prompt's `blocks` it holds), unless it holds half the prompt or more and its
    backend has a free slot."""
    return (
        c.load >= cap  # held_capacity(...) >= cap: computed only past the cap
        and c.load + 1 > held_capacity(cap, c.matched, blocks, headroom)
        and not (2 * c.matched >= blocks > 0 and c.load < c.slots)
    )


def held_capacity(cap: int, matched: int, blocks: int, headroom: float = 1.0) -> int:
    """The load above which a deployment holding `matched` of the prompt's `blocks` is
    passed over (rule 4): `headroom` caps more for a prompt held whole."""
    if not blocks:
        return cap
    return cap + math.floor(headroom * cap * min(matched, blocks) / blocks)


def share_capacity(window: int, deployments: int, max_load: float) -> int:
    return math.ceil(max_load * window / deployments)


def choose(
    candidates: Sequence[Candidate],
    pinned: str | None,
    max_load: float,
    window: int = 0,
    spread: bool = True,
    blocks: int = 0,
    headroom: float = 1.0,
    placed_cap: int | None = None,
) -> Choice:
    """`window`: the size of the recent-decision window the candidates' `recent` counts
    come from; 0 bounds calls in flight only. `spread`: a request passed over for its
    share may go where its prefix is not held (else only where it is). `blocks`: the
    prompt's length in blocks; 0 gives a held prefix no headroom. `headroom`: caps more
    load for a deployment holding the whole prompt (rule 4). `placed_cap`: the recent
    placements above which a deployment takes no new one (rule 5); None: unbounded."""
    n = len(candidates)
    loads = footprints = 0
    for c in candidates:
        loads += c.load
        footprints += c.footprint
    cap = capacity_of(loads, n, max_load)  # summed in one loop with the footprint
    share = share_capacity(window, n, max_load) if window else None
    # Why each deployment is passed over, computed once for the preference and the rest:
    # LOADED (rules 4, 6), OVER_SHARE or OVER_PLACEMENTS (rule 5); absent: eligible.
    passed: dict[str, int] = {}
    for c in candidates:
        if overloaded(c, cap, blocks, headroom) or (c.full and 2 * c.matched < blocks):
            passed[c.label] = _LOADED
        elif c.label != pinned:
            if placed_cap is not None and c.placed >= placed_cap:
                passed[c.label] = _OVER_PLACEMENTS
            elif share is not None and c.recent >= share:
                passed[c.label] = _OVER_SHARE
    if pinned is not None and pinned not in passed:  # rule 1, the common case: no ranking
        for c in candidates:
            if c.label == pinned:
                rest = sorted(
                    (o for o in candidates if o is not c),
                    key=lambda o: (o.label in passed, o.load, -o.score),
                )
                order = (pinned, *(o.label for o in rest))
                return Choice(order, PINNED, cap, (), share, placed_cap)
    # Rule 2's holders, rule 3's footprint (a deployment above the mean, for a prompt it
    # did not take recently, goes after those under it), then rendezvous.
    # Among holders alike, a hot prefix goes where it was placed least, another to its home.
    preference = sorted(
        candidates,
        key=lambda c: (
            c.label != pinned,
            -c.matched,
            not c.home and c.footprint * n > footprints,
            c.placed if spread else -c.home,
            -c.score,
        ),
    )
    spilled: list[str] = []
    winner: Candidate | None = None
    held: Candidate | None = None  # the first passed over for its share alone
    for candidate in preference:
        why = passed.get(candidate.label)
        if why is None:
            winner = candidate
            break
        if why == _OVER_PLACEMENTS:
            spread = True  # too many conversations for a while: it may be copied
        if why != _LOADED:
            held = held or candidate
        spilled.append(candidate.label)
    if held is not None and not spread and (winner is None or winner.matched == 0):
        winner = held  # no copy of the prompt made for the share alone
        spilled = spilled[: spilled.index(held.label)]
    if winner is None:  # every one over (backend queues beyond Turnout's own): least loaded
        winner = min(preference, key=lambda c: (c.load, c.recent))
    others = (c for c in candidates if c is not winner)
    rest = sorted(others, key=lambda c: (c.label in passed, c.load, -c.score))
    order = (winner.label, *(c.label for c in rest))
    reason = _reason(winner, pinned, spilled, preference)
    return Choice(order, reason, cap, tuple(spilled), share, placed_cap)


def _reason(
    winner: Candidate, pinned: str | None, spilled: Sequence[str], preference: Sequence[Candidate]
) -> str:
    if spilled:
        return SPILLED
    if winner.label == pinned:
        return PINNED
    if winner.matched > 0 and (len(preference) < 2 or preference[1].matched < winner.matched):
        return LONGEST_PREFIX
    if winner.matched == 0 and any(c.matched == 0 and c.score > winner.score for c in preference):
        return FOOTPRINT  # a deployment earlier in rendezvous order had more of the cache
    return RENDEZVOUS


def loads_of(labels: Sequence[str], *sources: Mapping[str, int]) -> list[int]:
    return [max((s.get(label, 0) for s in sources), default=0) for label in labels]
