"""The affinity part of an explanation: the session found (its source and a short hash,
never its value), each deployment's matched prefix (and whether it is the backend's exact
figure or the record's estimate), load and share of recent decisions, and why the winner
won."""

from __future__ import annotations

from typing import Any

from policies.affinity.choice import (
    FOOTPRINT,
    PINNED,
    SPILLED,
    Candidate,
    held_capacity,
    overloaded,
)
from policies.affinity.engine import Decision
from policies.affinity.key import AffinityKey


def explained(key: AffinityKey, decision: Decision) -> dict[str, Any]:
    choice, size = decision.choice, key.settings.block_chars
    headroom, blocks = key.settings.held_headroom, len(key.blocks)
    session = key.session
    winner = choice.order[0]
    return {
        "session": None if session is None else {"source": session.source, "hash": session.short},
        "pinned_to": decision.pinned,
        "prompt_blocks": len(key.blocks),
        "block_chars": size,
        "capacity": choice.capacity,
        "prefix_recent_decisions": decision.prefix_recent,
        "hot_prefix": decision.hot,
        "share_capacity": choice.share_capacity,
        "placement_capacity": choice.placement_capacity,
        "deployments": [
            {
                "deployment": c.label,
                "matched_blocks": c.matched,
                "matched_chars": c.matched * size,
                **_source(decision, c.label),
                "load": c.load,
                "in_flight": decision.in_flight.get(c.label, 0),
                "backend_queue": decision.backend.get(c.label),
                "load_capacity": held_capacity(choice.capacity, c.matched, blocks, headroom),
                "backend_slots": c.slots or None,
                "overloaded": overloaded(c, choice.capacity, blocks, headroom),
                "kv_cache_full": c.full,
                "recent_decisions": c.recent,
                "recent_placements": c.placed,
                "prefix_decisions": c.home,
                "footprint_blocks": c.footprint,
                "over_share": _over_share(c, decision),
            }
            for c in decision.candidates
        ],
        "winner": winner,
        "why": choice.reason,
        "spilled_from": list(choice.spilled),
        "note": _note(choice.reason, winner, decision, key),
        "prompt_cache_key": key.cache_key,
    }


def _source(decision: Decision, label: str) -> dict[str, Any]:
    """`backend`: the deployment's own prefix cache was asked (policies/affinity/exact.py):
    its tokens held of the prompt's, which `matched_blocks` converts; `record`: Turnout's
    estimate from what it sent there."""
    held = decision.exact.get(label)
    if held is None:
        return {"matched_source": "record"}
    return {"matched_source": "backend", "cached_tokens": held[0], "prompt_tokens": held[1]}


def _over_share(c: Candidate, decision: Decision) -> bool:
    if c.label == decision.pinned:
        return False
    share, placed = decision.choice.share_capacity, decision.choice.placement_capacity
    return (share is not None and c.recent + 1 > share) or (
        placed is not None and c.placed + 1 > placed
    )


def _note(reason: str, winner: str, decision: Decision, key: AffinityKey) -> str:
    if reason == PINNED:
        return f"the session is pinned to `{winner}`, which is not overloaded"
    if reason == SPILLED:
        passed = ", ".join(f"`{label}`" for label in decision.choice.spilled)
        return (
            f"{passed} would be preferred but each has load above its share "
            f"({decision.choice.capacity} calls, more by the part of the prompt it holds, "
            "none while its backend has a free slot and it holds half the prompt) or took its "
            f"share of this process's recent decisions ({decision.choice.share_capacity}) or "
            f"placements ({decision.choice.placement_capacity}), or its backend's KV cache is "
            "full and it holds less than half of this prompt: the next in order took the request"
        )
    if reason == FOOTPRINT:
        return (
            f"no deployment holds this prompt: `{winner}`, the first in its rendezvous order "
            "whose cache footprint (blocks of the distinct prompts it took recently) is not "
            "above the pool's mean"
        )
    matched = next(c.matched for c in decision.candidates if c.label == winner)
    held = decision.exact.get(winner)
    if matched and held is not None:
        return (
            f"`{winner}`'s prefix cache holds the longest part of this prompt ({held[0]} of "
            f"its {held[1]} tokens, {matched} blocks: the backend's exact figure)"
        )
    if matched:
        return f"`{winner}` was sent the longest part of this prompt ({matched} blocks)"
    return f"no deployment holds this prompt: `{winner}` by rendezvous hashing of its first block"
