"""`PrefixIndex`: whole blocks chained from the first, exact keys, LRU eviction of chain
tails, cascading when a block goes, and no store at all at capacity 0."""

from __future__ import annotations

import pytest

from providers.local.prefix_cache import PrefixIndex

SIZE = 4


def tokens(*blocks: int, extra: int = 0) -> list[int]:
    """Whole blocks whose tokens all equal the given numbers, then `extra` odd tokens."""
    ids = [value for value in blocks for _ in range(SIZE)]
    return ids + list(range(1000, 1000 + extra))


def test_match_finds_the_longest_run_of_whole_blocks_within_the_limit() -> None:
    index = PrefixIndex(SIZE, capacity=8)
    prompt = tokens(1, 2, 3, extra=2)
    claimed = index.claim(prompt, len(prompt))
    assert [block for block, _ in claimed] == [0, 1, 2]  # the partial block is not kept
    ids = [store for _, store in claimed]
    assert len(set(ids)) == 3
    assert index.match(prompt, len(prompt) - 1) == ids
    assert index.match(prompt, 11) == ids[:2]  # the limit cuts into the third block
    assert index.match(tokens(1, 2), 7) == ids[:1]
    assert index.cached_tokens(prompt) == 12
    assert index.claim(prompt, len(prompt)) == []  # held already: nothing to copy


def test_prompts_diverging_mid_block_share_only_the_blocks_before() -> None:
    index = PrefixIndex(SIZE, capacity=8)
    first = tokens(1, 2, 3)
    index.claim(first, len(first))
    second = [*tokens(1, 2), 3, 3, 9, 9]  # the third block differs in its third token
    assert index.cached_tokens(second) == 8
    claimed = index.claim(second, len(second))
    assert [block for block, _ in claimed] == [2]
    assert index.cached_tokens(first) == index.cached_tokens(second) == 12
    assert len(index) == 4


def test_a_block_is_found_only_behind_the_chain_it_was_computed_after() -> None:
    index = PrefixIndex(SIZE, capacity=8)
    index.claim(tokens(1, 2), 8)
    assert index.cached_tokens(tokens(2)) == 0  # block 2's tokens, but at the head
    assert index.cached_tokens(tokens(5, 2)) == 0  # behind another first block
    assert index.cached_tokens(tokens(1, 2, 3)) == 8


def test_the_least_recently_used_tail_goes_first() -> None:
    index = PrefixIndex(SIZE, capacity=4)
    index.claim(tokens(1, 2), 8)
    index.claim(tokens(5, 6), 8)
    index.match(tokens(1, 2), 8)  # chain 1-2 is now the more recent
    index.claim(tokens(7), 4)  # the store is full: the tail of 5-6 makes room
    assert index.cached_tokens(tokens(5, 6)) == 4
    assert index.cached_tokens(tokens(1, 2)) == 8
    assert index.cached_tokens(tokens(7)) == 4
    assert index.stats.evicted_blocks == 1
    index.claim(tokens(8, 9), 8)  # two more: block 5 (older than 7), then 1-2's tail
    assert index.cached_tokens(tokens(5)) == 0
    assert index.cached_tokens(tokens(1, 2)) == 4
    assert index.cached_tokens(tokens(8, 9)) == 8


def test_cached_tokens_leaves_the_lru_order_alone() -> None:
    index = PrefixIndex(SIZE, capacity=2)
    index.claim(tokens(1), 4)
    index.claim(tokens(2), 4)
    assert index.cached_tokens(tokens(1)) == 4  # a router's question refreshes nothing
    index.claim(tokens(3), 4)
    assert index.cached_tokens(tokens(1)) == 0
    assert index.cached_tokens(tokens(2)) == 4


def test_forgetting_a_block_takes_every_block_chained_behind_it() -> None:
    index = PrefixIndex(SIZE, capacity=8)
    claimed = index.claim(tokens(1, 2, 3), 12)
    index.claim(tokens(1, 2, 4), 12)
    index.claim(tokens(1, 5), 8)
    index.forget([claimed[1][1]])  # block 2 of chain 1: both of its children go with it
    assert len(index) == 2
    assert index.cached_tokens(tokens(1, 2, 3)) == 4
    assert index.cached_tokens(tokens(1, 2, 4)) == 4
    assert index.cached_tokens(tokens(1, 5)) == 8
    # The ids freed are handed out again, and stale chains never match through them.
    again = index.claim(tokens(6, 7, 8), 12)
    assert len(again) == 3
    assert index.cached_tokens(tokens(1, 2, 3)) == 4
    assert len(index) == 5


def test_a_chain_longer_than_the_store_keeps_its_head() -> None:
    index = PrefixIndex(SIZE, capacity=2)
    claimed = index.claim(tokens(1, 2, 3, 4), 16)
    assert [block for block, _ in claimed] == [0, 1]
    assert index.cached_tokens(tokens(1, 2, 3, 4)) == 8


def test_capacity_0_holds_nothing() -> None:
    index = PrefixIndex(SIZE, capacity=0)
    assert index.claim(tokens(1, 2), 8) == []
    assert index.match(tokens(1, 2), 8) == []
    assert index.cached_tokens(tokens(1, 2)) == 0
    assert len(index) == 0


def test_stats_count_tokens_looked_up_and_reused_and_clear_forgets_all() -> None:
    index = PrefixIndex(SIZE, capacity=8)
    index.claim(tokens(1, 2), 8)
    index.match(tokens(1, 2, extra=1), 8)
    index.match(tokens(3), 3)
    assert (index.stats.looked_up, index.stats.reused) == (13, 8)
    index.clear()
    assert len(index) == 0
    assert index.match(tokens(1, 2), 8) == []
    assert len(index.claim(tokens(1, 2, 3, 4, 5, 6, 7, 8), 32)) == 8  # every id is free again


def test_a_prompt_held_whole_counts_all_but_its_last_token_reused() -> None:
    index = PrefixIndex(SIZE, capacity=8)
    index.claim(tokens(1, 2), 8)
    assert len(index.match(tokens(1, 2), 8)) == 2  # both blocks load ...
    assert index.stats.reused == 2 * SIZE - 1  # ... and the last token is recomputed


def test_block_tokens_must_be_positive() -> None:
    with pytest.raises(ValueError, match="block_tokens"):
        PrefixIndex(0, capacity=4)
