"""A backend's own prefix-cache figure in affinity routing (policies/affinity/exact.py):
the conversion into the record's unit, the figure replacing the record's estimate for the
deployments whose backend answers (and only theirs), and explain naming its source."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

from policies.affinity.exact import exact_blocks
from policies.affinity.explained import explained
from policies.affinity.key import AffinityKey, affinity_key
from policies.affinity.settings import AffinitySettings
from policies.config import Deployment
from policies.plan import Target
from policies.policy_config import Strategy
from policies.state.memory import MemoryStore
from policies.strategies import Orderer
from providers.base import CachedPromptTokens

POOL = [Target("m", Deployment(provider=f"r{i}", model="m")) for i in range(3)]
SYSTEM = "You answer from the tenant handbook, one short sentence each time. " * 8


def test_held_tokens_become_leading_blocks_of_the_prompt_floored() -> None:
    assert exact_blocks(0, 200, 40) == 0
    assert exact_blocks(200, 200, 40) == 40  # held whole
    assert exact_blocks(96, 200, 40) == 19  # 19.2 blocks: a block counts once wholly held
    assert exact_blocks(15, 200, 40) == 3
    assert exact_blocks(4, 200, 40) == 0  # under one block
    assert exact_blocks(300, 200, 40) == 40  # never past the prompt
    assert exact_blocks(16, 0, 40) == 0  # a prompt of no tokens holds nothing
    assert exact_blocks(64, 128, 0) == 0  # a prompt shorter than one block of text


class Backend:
    """A backend's `cached_prompt_tokens`: a scripted (held, prompt) answer, and the
    bodies it was asked about."""

    def __init__(self, answer: tuple[int, int] | None) -> None:
        self.answer = answer
        self.asked: list[Mapping[str, Any]] = []

    async def __call__(self, body: Mapping[str, Any]) -> tuple[int, int] | None:
        self.asked.append(body)
        return self.answer


def orderer(hooks: dict[str, CachedPromptTokens | None]) -> Orderer:
    return Orderer(
        MemoryStore(),
        random.Random(),
        lambda _: None,
        None,
        None,
        lambda target: hooks.get(target.label),
    )


def key(user: str) -> AffinityKey:
    body = {
        "model": "m",
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
    }
    return affinity_key(AffinitySettings(), body, {}, "team")


async def test_the_backends_figure_replaces_the_records_estimate() -> None:
    """r0 was sent the system prompt (its record says so), but r0's backend says its cache
    lost it and r1's that it holds most of it: r1 wins, and r1's record follows."""
    r0, r1 = Backend((0, 300)), Backend((240, 300))
    order = orderer({"r0/m": r0, "r1/m": r1})  # r2: a remote API, no hook
    await order.served(key("question one"), POOL[0])

    second = key("question two")
    decision = await order.decide(POOL, second)
    matched = {c.label: c.matched for c in decision.candidates}
    assert matched == {"r0/m": 0, "r1/m": 240 * len(second.blocks) // 300, "r2/m": 0}
    assert decision.choice.order[0] == "r1/m"
    assert dict(decision.exact) == {"r0/m": (0, 300), "r1/m": (240, 300)}
    assert r1.asked[-1] is second.body  # the request itself reaches the backend

    # Recorded on r1, whose record held nothing of it (the backend's figure is not the
    # record's: the record looks its own up).
    assert (await order.order(POOL, Strategy.AFFINITY, second))[0].label == "r1/m"
    r0.answer = r1.answer = None  # the backends cannot tell (a model not loaded yet)
    third = key("question three")
    by_record = await order.decide(POOL, third)
    held = {c.label: c.matched for c in by_record.candidates}
    assert held["r0/m"] > 0
    assert held["r1/m"] > 0
    assert held["r2/m"] == 0
    assert not by_record.exact


async def test_explain_says_where_each_figure_came_from() -> None:
    r0 = Backend((160, 320))
    order = orderer({"r0/m": r0})
    asked = key("question")
    view = explained(asked, await order.decide(POOL, asked))
    by_label = {d["deployment"]: d for d in view["deployments"]}
    assert by_label["r0/m"]["matched_source"] == "backend"
    assert (by_label["r0/m"]["cached_tokens"], by_label["r0/m"]["prompt_tokens"]) == (160, 320)
    assert by_label["r0/m"]["matched_blocks"] == len(asked.blocks) // 2
    assert by_label["r1/m"]["matched_source"] == "record"
    assert "cached_tokens" not in by_label["r1/m"]
    assert view["winner"] == "r0/m"
    assert view["why"] == "longest prefix"
    assert "exact" in view["note"]


async def test_a_pool_without_hooks_asks_nothing() -> None:
    """Remote APIs have no hook: nothing is asked, every figure is the record's."""
    order = orderer({})
    asked = key("question")
    decision = await order.decide(POOL, asked)
    assert not decision.exact
    view = explained(asked, decision)
    assert {d["matched_source"] for d in view["deployments"]} == {"record"}
