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
)
from policies.affinity.key import affinity_key, with_cache_key
from policies.affinity.record import PrefixRecord
from policies.affinity.session import session_key
from policies.affinity.settings import DEFAULT_SESSION_FROM, AffinitySettings


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
