"""The affinity parts, each on its own: settings, session keys, blocks, the per-deployment
record and the pure choice."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from policies.affinity.blocks import chained_hashes, prompt_text
from policies.affinity.choice import (
    LONGEST_PREFIX,
    PINNED,
    RENDEZVOUS,
    SPILLED,
    Candidate,
    capacity,
    choose,
    held_capacity,
    rendezvous,
    share_capacity,
)
from policies.affinity.key import affinity_key, with_cache_key
from policies.affinity.record import PrefixRecord
from policies.affinity.session import session_key
from policies.affinity.settings import DEFAULT_SESSION_FROM, AffinitySettings
from policies.affinity.share import RecentShare


def test_settings_defaults_and_source_forms() -> None:
    settings = AffinitySettings()
    assert settings.session_from == DEFAULT_SESSION_FROM
    assert (settings.block_chars, settings.max_load, settings.set_prompt_cache_key) == (
        64,
        1.25,
        False,
    )
    assert AffinitySettings(session_from=("header:X-Conv",)).session_from == ("header:x-conv",)
    for bad in ("session", "metadata.", "header:", "header:a b", "body.user"):
        with pytest.raises(ValidationError, match="session source"):
            AffinitySettings(session_from=(bad,))
    with pytest.raises(ValidationError):
        AffinitySettings(max_load=0.9)


def test_session_key_takes_the_first_source_present_and_hides_its_value() -> None:
    sources = AffinitySettings().session_from
    body = {"user": "alice", "metadata": {"session": "s-1"}}
    found = session_key(sources, body, {"x-session-id": "h"}, "team-a")
    assert found is not None
    assert found.source == "user"
    assert "alice" not in found.digest
    assert len(found.short) == 12
    only_header = session_key(sources, {}, {"X-Claude-Code-Session-Id": "c"}, None)
    assert only_header is not None
    assert only_header.source == "header:x-claude-code-session-id"
    meta = session_key(sources, {"metadata": {"session": "s-1"}}, {}, None)
    assert meta is not None
    assert meta.source == "metadata.session"
    assert session_key(sources, {"user": ""}, {}, None) is None
    # Two teams with the same id are two sessions.
    other = session_key(sources, body, {}, "team-b")
    assert other is not None
    assert other.digest != found.digest


def test_prompt_text_and_chained_blocks_share_exactly_the_common_prefix() -> None:
    system = {"role": "system", "content": "S" * 200}
    one = prompt_text({"messages": [system, {"role": "user", "content": "a" * 100}]})
    two = prompt_text({"messages": [system, {"role": "user", "content": "b" * 100}]})
    a, b = chained_hashes(one, 64), chained_hashes(two, 64)
    assert len(a) == len(one) // 64
    common = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
    assert common * 64 <= len(prompt_text({"messages": [system]})) + 3 < (common + 1) * 64
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert prompt_text(parts).endswith("hi")
    assert prompt_text({"prompt": ["first", "second"]}) == "first"


def test_record_matches_the_longest_prefix_and_evicts_from_the_tail() -> None:
    record = PrefixRecord(max_blocks=10)
    text = "".join(chr(65 + i) * 8 for i in range(8))
    chain = chained_hashes(text, 8)
    record.record(chain)
    assert record.matched(chain) == 8
    assert record.matched(chained_hashes(text[:44] + "x" + text[45:], 8)) == 5
    assert record.matched(chained_hashes("x" + text[1:], 8)) == 0
    other = chained_hashes("z" * 32, 8)
    record.record(other)  # 12 blocks in all: two of the oldest chain's tail go
    assert len(record) == 10
    assert record.matched(chain) == 6
    assert record.matched(other) == 4


def _candidates(*figures: tuple[str, int, int, int]) -> list[Candidate]:
    return [Candidate(label, matched, load, score) for label, matched, load, score in figures]


def test_choice_pin_then_prefix_then_rendezvous_within_bounded_load() -> None:
    pool = _candidates(("a", 0, 0, 1), ("b", 3, 0, 2), ("c", 0, 0, 9))
    assert choose(pool, "a", 1.25).order[0] == "a"
    assert choose(pool, "a", 1.25).reason == PINNED
    assert choose(pool, None, 1.25).reason == LONGEST_PREFIX
    assert choose(pool, None, 1.25).order[0] == "b"
    cold = _candidates(("a", 0, 0, 1), ("b", 0, 0, 2), ("c", 0, 0, 9))
    assert choose(cold, None, 1.25).order == ("c", "b", "a")
    assert choose(cold, None, 1.25).reason == RENDEZVOUS
    # An idle pool is all eligible; b with 6 of 7 calls is over ceil(1.25 * 8 / 3) = 4.
    assert capacity([0, 0, 0], 1.25) == 1
    hot = _candidates(("a", 0, 1, 1), ("b", 3, 6, 2), ("c", 0, 0, 9))
    spilled = choose(hot, "b", 1.25)
    assert spilled.order[0] == "c"
    assert spilled.reason == SPILLED
    assert spilled.spilled == ("b",)
    assert spilled.order[-1] == "b"  # the overloaded one last


def test_a_deployment_holding_the_prompt_has_headroom_in_proportion_to_what_it_holds() -> None:
    # 12 calls in flight over 4: cap ceil(1.25 * 13 / 4) = 5; whole prompt held: up to 10.
    assert capacity([6, 2, 2, 2], 1.25) == 5
    assert [held_capacity(5, m, 100) for m in (0, 19, 20, 50, 100, 150)] == [5, 5, 6, 7, 10, 10]
    assert held_capacity(5, 100, 0) == 5  # no prompt length given: no headroom
    pool = _candidates(("a", 100, 6, 9), ("b", 0, 2, 5), ("c", 0, 2, 3), ("d", 0, 2, 1))
    kept = choose(pool, None, 1.25, blocks=100)
    assert (kept.order[0], kept.reason, kept.spilled) == ("a", LONGEST_PREFIX, ())
    # Without the prompt's length (or holding too little of it) the cap alone applies.
    assert choose(pool, None, 1.25).order[0] == "b"
    half = [pool[0]._replace(matched=20), *pool[1:]]
    assert choose(half, None, 1.25, blocks=100).order[0] == "b"  # 6 + 1 > 5 + 1
    # Past twice the cap even a whole prompt moves: the queue outweighs its prefill.
    full = [pool[0]._replace(load=14), *pool[1:]]  # cap ceil(1.25 * 21 / 4) = 7
    moved = choose(full, None, 1.25, blocks=100)
    assert (moved.order[0], moved.reason, moved.spilled) == ("b", SPILLED, ("a",))


def test_choice_passes_over_a_deployment_past_its_share_of_recent_decisions() -> None:
    # Window 128 over 4: ceil(1.25 * 128 / 4) = 40 decisions each at most.
    assert share_capacity(128, 4, 1.25) == 40
    pool = [Candidate("a", 5, 0, 1, recent=40), Candidate("b", 0, 0, 9, recent=10)]
    pool += [Candidate("c", 0, 0, 2, recent=0), Candidate("d", 0, 0, 3, recent=0)]
    chosen = choose(pool, None, 1.25, window=128)
    assert chosen.order[0] == "b"  # the next in the prompt's order, not the idlest
    assert (chosen.reason, chosen.spilled, chosen.share_capacity) == (SPILLED, ("a",), 40)
    assert chosen.order[-1] == "a"
    assert choose(pool, None, 1.25, window=128 * 2).order[0] == "a"  # under 80 of 256
    assert choose(pool, None, 1.25).order[0] == "a"  # no window: calls in flight only
    # A session pinned there keeps going there: its later turns are cheapest at home.
    assert choose(pool, "a", 1.25, window=128).reason == PINNED


def test_an_ordinary_prefix_is_moved_for_its_share_only_where_it_is_held() -> None:
    home = Candidate("a", 5, 0, 9, recent=40)  # over 40 of 128
    cold = [Candidate("b", 0, 0, 5), Candidate("c", 0, 0, 3), Candidate("d", 0, 0, 1)]
    stays = choose([home, *cold], None, 1.25, window=128, spread=False)
    assert (stays.order[0], stays.reason, stays.spilled) == ("a", LONGEST_PREFIX, ())
    assert choose([home, *cold], None, 1.25, window=128).order[0] == "b"  # a hot one spreads
    held = [home, Candidate("b", 0, 0, 5), Candidate("c", 5, 0, 3), Candidate("d", 0, 0, 1)]
    moved = choose(held, None, 1.25, window=128, spread=False)
    assert (moved.order[0], moved.reason, moved.spilled) == ("c", SPILLED, ("a",))
    # Past its calls in flight it moves anyway: the share rule never keeps an overloaded one.
    loaded = [home._replace(load=6), *cold]
    assert choose(loaded, None, 1.25, window=128, spread=False).order[0] == "b"


def test_share_bound_caps_a_hot_prefix_in_every_window_and_spreads_it_in_its_own_order() -> None:
    """One prefix in every request, calls in flight all 0 (fast replicas): without the
    share bound it would take all of them; with it no deployment takes more than 40 of any
    128 consecutive decisions, and the prefix spreads over its own rendezvous order."""
    labels = ["r0", "r1", "r2", "r3"]
    anchor = b"hot prefix"
    by_weight = sorted(labels, key=lambda label: -rendezvous(anchor, label))
    share = RecentShare(len(labels))
    matched = dict.fromkeys(labels, 0)
    winners: list[str] = []
    for _ in range(8 * share.size):  # whole windows: the share over all of them too
        pool = [
            Candidate(label, matched[label], 0, rendezvous(anchor, label), share.count(label))
            for label in labels
        ]
        winner = choose(pool, None, 1.25, window=share.size).order[0]
        share.add(winner, anchor)
        matched[winner] = 10  # the prompt recorded where it went
        winners.append(winner)
    for start in range(len(winners) - share.size + 1):
        window = winners[start : start + share.size]
        assert max(window.count(label) for label in labels) <= 40
    assert winners[:40] == [by_weight[0]] * 40  # home until it took its share
    assert winners[40] == by_weight[1]
    assert max(winners.count(label) for label in labels) / len(winners) <= 1.25 / 4


def test_a_prefix_is_hot_past_half_a_deployments_mean_share_of_the_window() -> None:
    share = RecentShare(4)  # 128 decisions; hot: more than 16 of them
    for i in range(share.size):  # 16 tenants alike: 8 each, none hot
        share.add(f"r{i % 4}", b"tenant %d" % (i % 16))
    assert not any(share.hot(b"tenant %d" % t) for t in range(16))
    for _ in range(20):  # one tenant's burst pushes out 20 (2 of them its own): 26 of 128
        share.add("r0", b"tenant 0")
    assert share.hot(b"tenant 0")
    assert share.prefix_count(b"tenant 0") == 26
    assert len(share) == share.size
    assert share.count("r0") == 32 - 5 + 20
    for i in range(share.size):  # the burst leaves the window
        share.add(f"r{i % 4}", b"tenant %d" % (i % 16))
    assert not share.hot(b"tenant 0")
    assert share.prefix_count(b"tenant 0") == 8
    assert share.count("r0") == 32


def test_cache_key_is_a_hash_of_team_and_head_and_only_where_set() -> None:
    settings = AffinitySettings(set_prompt_cache_key=True)
    body = {"messages": [{"role": "system", "content": "secret system prompt " * 20}]}
    key = affinity_key(settings, body, {}, "team-a", ["p/m"])
    assert key.cache_key is not None
    assert "secret" not in key.cache_key
    assert affinity_key(settings, body, {}, "team-b", ["p/m"]).cache_key != key.cache_key
    assert with_cache_key({}, key, "p/m") == {"prompt_cache_key": key.cache_key}
    assert with_cache_key({}, key, "q/m") == {}
    assert with_cache_key({"prompt_cache_key": "mine"}, key, "p/m") == {"prompt_cache_key": "mine"}
    sent = affinity_key(settings, {**body, "prompt_cache_key": "mine"}, {}, "team-a", ["p/m"])
    assert sent.cache_key is None
    assert affinity_key(AffinitySettings(), body, {}, "t", ["p/m"]).cache_key is None
