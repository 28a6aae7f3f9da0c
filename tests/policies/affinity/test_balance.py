"""The rules that balance caches rather than calls (issue 19, 2026-12-08): cold prompts
placed by cache footprint, ties between holders kept at the prefix's home, the share of
recent placements (a hot prefix spread by it), and no spill for load while the home's
backend has a free slot. Deterministic: no timing, no servers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from policies.affinity.choice import (
    FOOTPRINT,
    LONGEST_PREFIX,
    PINNED,
    RENDEZVOUS,
    SPILLED,
    Candidate,
    capacity,
    choose,
    held_capacity,
    rendezvous,
)
from policies.affinity.engine import AffinityRouter
from policies.affinity.explained import explained
from policies.affinity.key import AffinityKey, affinity_key
from policies.affinity.settings import AffinitySettings
from policies.affinity.share import RecentShare
from policies.state.memory import MemoryStore

LABELS = ["r0", "r1", "r2", "r3"]


def _key(text: str, settings: AffinitySettings | None = None, **extra: Any) -> AffinityKey:
    body = {"model": "m", "messages": [{"role": "user", "content": text}], **extra}
    return affinity_key(settings or AffinitySettings(), body, {}, "team")


@dataclass
class Report:
    waiting: int
    running: int
    fresh: bool = True
    kv_cache_usage: float | None = None


# The recent window: footprint, home and placements.


def test_footprint_counts_each_prefix_once_at_its_longest_prompt_while_in_the_window() -> None:
    share = RecentShare(4)  # 128 decisions
    share.add("r0", b"tenant a", 100)
    share.add("r0", b"tenant a", 120)  # the conversation grew: counted at its longest
    share.add("r0", b"tenant a", 110)
    share.add("r0", b"tenant b", 50)
    share.add("r1", b"tenant a", 100)  # a copy elsewhere counts there too
    assert share.footprint == {"r0": 170, "r1": 100}
    assert (share.home("r0", b"tenant a"), share.home("r1", b"tenant a")) == (3, 1)
    assert share.home("r2", b"tenant a") == 0
    for i in range(share.size - 3):  # the first two decisions leave the window
        share.add("r2", b"other %d" % (i % 2), 10)
    # r0's tenant a: two of its three decisions gone; it still counts at its longest.
    assert share.footprint["r0"] == 120 + 50
    assert share.home("r0", b"tenant a") == 1
    for _ in range(4):
        share.add("r2", b"other 0", 10)
    assert share.footprint == {"r0": 0, "r1": 0, "r2": 20}
    assert share.home("r0", b"tenant a") == 0


def test_placements_are_counted_apart_over_the_last_window_of_them() -> None:
    share = RecentShare(4)
    for _ in range(10):
        share.add("r0", b"a", 5, placement=True)
        share.add("r0", b"a", 5)  # a pinned turn: a decision, not a placement
    assert (share.count("r0"), share.placed["r0"], share.placements()) == (20, 10, 10)
    for _ in range(share.size):
        share.add("r1", b"b", 5, placement=True)
    assert share.placed == {"r0": 0, "r1": share.size}
    assert share.placements() == share.size


# The pure choice.


def test_a_cold_prompt_skips_deployments_above_the_mean_footprint_in_rendezvous_order() -> None:
    # r0 first by rendezvous, but its cache footprint (300 of 600) is above the mean (150).
    pool = [
        Candidate("r0", 0, 0, 9, footprint=300),
        Candidate("r1", 0, 0, 5, footprint=200),
        Candidate("r2", 0, 0, 3, footprint=100),
        Candidate("r3", 0, 0, 1, footprint=0),
    ]
    chosen = choose(pool, None, 1.25, blocks=100)
    assert (chosen.order[0], chosen.reason) == ("r2", FOOTPRINT)
    # All at the mean: rendezvous decides as before.
    even = [c._replace(footprint=150) for c in pool]
    assert choose(even, None, 1.25, blocks=100).reason == RENDEZVOUS
    assert choose(even, None, 1.25, blocks=100).order[0] == "r0"
    # A deployment that took this prefix recently is not judged by its footprint.
    home = [pool[0]._replace(home=2), *pool[1:]]
    assert choose(home, None, 1.25, blocks=100).order[0] == "r0"
    # Nor does footprint outrank a held prefix: the longest match still wins.
    held = [pool[0]._replace(matched=50), *pool[1:]]
    assert choose(held, None, 1.25, blocks=100).reason == LONGEST_PREFIX


def test_of_two_holders_the_home_that_keeps_taking_the_prefix_wins() -> None:
    # r1 ranks first by rendezvous but holds only a spill's copy; r0 keeps taking it.
    pool = [
        Candidate("r0", 100, 0, 1, home=12),
        Candidate("r1", 100, 0, 9, home=1),
        Candidate("r2", 0, 0, 5),
    ]
    assert choose(pool, None, 1.25, spread=False, blocks=100).order[0] == "r0"
    # Neither took it in the window: rendezvous again.
    cold = [c._replace(home=0) for c in pool]
    assert choose(cold, None, 1.25, spread=False, blocks=100).order[0] == "r1"


def test_a_hot_prefix_goes_to_the_holder_given_fewest_recent_placements() -> None:
    pool = [
        Candidate("r0", 100, 0, 9, placed=30, home=30),
        Candidate("r1", 100, 0, 5, placed=12, home=12),
        Candidate("r2", 100, 0, 3, placed=20, home=20),
        Candidate("r3", 0, 0, 1, placed=0),
    ]
    assert choose(pool, None, 1.25, window=128, spread=True, blocks=100).order[0] == "r1"
    # Not hot: the home that took it most.
    assert choose(pool, None, 1.25, window=128, spread=False, blocks=100).order[0] == "r0"


def test_a_deployment_over_its_share_of_placements_takes_no_new_conversation() -> None:
    # 40 of the last 128 placements (ceil(1.25 * 128 / 4)); decisions alone under 40.
    home = Candidate("r0", 100, 0, 9, recent=30, home=20, placed=40)
    others = [Candidate("r1", 0, 0, 5), Candidate("r2", 0, 0, 3), Candidate("r3", 0, 0, 1)]
    moved = choose([home, *others], None, 1.25, 128, spread=False, blocks=100, placed_cap=40)
    # Too many conversations for a while: the prefix is copied, though it is not hot.
    assert (moved.order[0], moved.reason, moved.spilled) == ("r1", SPILLED, ("r0",))
    assert moved.placement_capacity == 40
    assert moved.order[-1] == "r0"
    # Under it, or with no bound given, the home keeps it.
    under = [home._replace(placed=39), *others]
    assert choose(under, None, 1.25, 128, spread=False, blocks=100, placed_cap=40).order[0] == "r0"
    assert choose([home, *others], None, 1.25, 128, spread=False, blocks=100).order[0] == "r0"
    # A session's later turn pinned there is not a placement: it stays.
    pinned = choose([home, *others], "r0", 1.25, 128, spread=False, blocks=100, placed_cap=40)
    assert (pinned.order[0], pinned.reason) == ("r0", PINNED)


def test_a_home_with_a_free_slot_keeps_what_it_mostly_holds_whatever_the_cap() -> None:
    # 12 calls in flight over 4: cap 5, up to 10 for a prompt held whole (headroom 1).
    assert capacity([10, 1, 1, 0], 1.25) == 5
    pool = [
        Candidate("r0", 100, 10, 9, slots=16),  # its backend ran 16 at once
        Candidate("r1", 0, 1, 5),
        Candidate("r2", 0, 1, 3),
        Candidate("r3", 0, 0, 1),
    ]
    kept = choose(pool, None, 1.25, blocks=100)
    assert (kept.order[0], kept.reason, kept.spilled) == ("r0", LONGEST_PREFIX, ())
    # Its backend runs no more than it has in flight (or said nothing): the cap applies.
    for slots in (0, 10):
        full = [pool[0]._replace(slots=slots), *pool[1:]]
        assert choose(full, None, 1.25, blocks=100).spilled == ("r0",)
    # Holding less than half the prompt, the free slot is no reason to stay.
    part = [pool[0]._replace(matched=49, load=7), *pool[1:]]  # cap 5 + 2 = 7
    assert choose(part, None, 1.25, blocks=100).spilled == ("r0",)


def test_held_headroom_scales_the_extra_load_a_held_prompt_may_take() -> None:
    assert [held_capacity(5, m, 100, 2.0) for m in (0, 10, 50, 100)] == [5, 6, 10, 15]
    assert [held_capacity(5, m, 100, 0.0) for m in (0, 100)] == [5, 5]
    pool = [Candidate("r0", 100, 12, 9), Candidate("r1", 0, 1, 5), Candidate("r2", 0, 0, 3)]
    pool.append(Candidate("r3", 0, 0, 1))  # 13 in flight: cap ceil(1.25 * 14 / 4) = 5
    assert choose(pool, None, 1.25, blocks=100).order[0] == "r1"  # 13 > 10
    assert choose(pool, None, 1.25, blocks=100, headroom=2.0).order[0] == "r0"  # 13 <= 15
    assert AffinitySettings().held_headroom == 1.0


# Through the router (memory store, no load).


async def test_new_prompts_fill_the_caches_evenly_not_by_hash_luck() -> None:
    """16 tenants' prompts of one size, each sent once, no load: by rendezvous alone the
    first choices are uneven; by footprint each deployment is given four."""
    router = AffinityRouter(MemoryStore(), lambda _: None)
    tenants = [_key(f"tenant {t:02d} " * 80) for t in range(16)]
    placed: dict[str, int] = {}
    for key in tenants:
        winner = (await router.order(LABELS, key))[0]
        placed[winner] = placed.get(winner, 0) + 1
    assert sorted(placed.values()) == [4, 4, 4, 4]
    # Each tenant goes back where it was placed.
    for key in tenants:
        decision = await router.decide(LABELS, key)
        assert decision.choice.reason == LONGEST_PREFIX


async def test_the_router_learns_a_backends_slots_from_its_reports() -> None:
    reports: dict[str, Report] = {}
    store = MemoryStore()
    router = AffinityRouter(store, lambda _: None, reports=reports.get)
    key = _key("a conversation's prompt " * 40)
    home = (await router.order(LABELS, key))[0]
    reports[home] = Report(waiting=0, running=8)  # it ran 8 at once: 8 slots at least
    await router.decide(LABELS, key)
    reports[home] = Report(waiting=0, running=2)
    await store.add_in_flight(home, 6)  # cap ceil(1.25 * 7 / 4) = 3, 6 held whole
    kept = await router.decide(LABELS, key)
    assert (kept.choice.order[0], kept.choice.spilled) == (home, ())
    assert next(c for c in kept.candidates if c.label == home).slots == 8
    await store.add_in_flight(home, 2)  # 8 in flight: no free slot, past 6
    assert (await router.decide(LABELS, key)).choice.spilled == (home,)
    # Explain judges it as the choice does.
    figures = {d["deployment"]: d for d in explained(key, kept)["deployments"]}
    assert figures[home]["backend_slots"] == 8
    assert not figures[home]["overloaded"]
    assert figures[home]["load_capacity"] == 6


async def test_explain_shows_footprint_placements_and_the_footprint_reason() -> None:
    router = AffinityRouter(MemoryStore(), lambda _: None)
    for t in range(8):
        await router.order(LABELS, _key(f"tenant {t} " * 80))
    decision = await router.decide(LABELS, _key("a new tenant " * 80))
    answer = explained(_key("a new tenant " * 80), decision)
    assert answer["placement_capacity"] == 40
    rows = answer["deployments"]
    assert sum(d["recent_placements"] for d in rows) == 8
    assert sum(d["footprint_blocks"] for d in rows) == sum(c.footprint for c in decision.candidates)
    assert all(d["prefix_decisions"] == 0 for d in rows)
    if answer["why"] == FOOTPRINT:
        assert "footprint" in answer["note"]


async def test_rendezvous_weights_are_remembered_per_prefix_and_bounded() -> None:
    from policies.affinity import engine

    router = AffinityRouter(MemoryStore(), lambda _: None)
    key = _key("a prefix that comes back " * 10)
    first = await router.decide(LABELS, key)
    assert await router.decide(LABELS, key) == first  # the remembered weights: same choice
    assert [c.score for c in first.candidates] == [rendezvous(key.anchor, x) for x in LABELS]
    for i in range(engine.MAX_WEIGHTS - len(router._weights)):
        router._weights[(b"%d" % i, tuple(LABELS))] = (0, 0, 0, 0)
    await router.decide(LABELS, _key("another prefix " * 10))  # full: cleared, then kept
    assert len(router._weights) == 1
