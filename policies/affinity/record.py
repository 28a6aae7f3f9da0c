"""What one deployment was recently sent: a bounded set of chained block hashes with LRU
eviction, an estimate of what its prefix cache holds.

Blocks are recorded last to first, so a prompt's first block is its most recent entry and
eviction takes chains from their tail. The set of a chain's recorded blocks is then a
prefix of it, and the longest match is found by binary search: O(log blocks) a lookup,
whatever the record's size.

Re-touching every held block of a hot prefix on each request would cost ~0.1 µs a block
(most of a decision for an 8,000-character prompt), so a held prefix whose deepest block
was touched within the last eighth of the record's insertions is left where it is: it is
far from eviction. A chain left alone afterwards may then lose its head up to an eighth of
a record before its tail, so a match at the very end of the LRU can be overestimated;
that is the price of an estimate, and the engine's own cache is no more exact."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from itertools import repeat


class PrefixRecord:
    def __init__(self, max_blocks: int) -> None:
        self._max = max_blocks
        self._fresh = max(1, max_blocks // 8)
        self._blocks: OrderedDict[int, int] = OrderedDict()  # hash -> insertions at touch
        self._inserted = 0

    def __len__(self) -> int:
        return len(self._blocks)

    def matched(self, hashes: Sequence[int]) -> int:
        """How many leading blocks of `hashes` this deployment was sent."""
        blocks = self._blocks
        lo, hi = 0, len(hashes)  # blocks [0, lo) are known present; [hi, ...) unknown
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if hashes[mid - 1] in blocks:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def record(self, hashes: Sequence[int], matched: int | None = None) -> None:
        """`matched`: `self.matched(hashes)` if the caller has it (no lookups repeated)."""
        blocks = self._blocks
        if matched is None:
            matched = self.matched(hashes)
        self._inserted += len(hashes) - matched
        now = self._inserted
        stale = matched and blocks[hashes[matched - 1]] < now - self._fresh
        # New blocks appended, the tail first (one C loop).
        blocks.update(zip(reversed(hashes[matched:]), repeat(now)))
        if stale:
            touch = blocks.move_to_end
            for i in range(matched - 1, -1, -1):  # held: made the newest, the head last
                blocks[hashes[i]] = now  # (put back, where the head went first)
                touch(hashes[i])
        while len(blocks) > self._max:
            blocks.popitem(last=False)
