"""What one deployment was recently sent: a bounded set of chained block hashes with LRU
eviction, an estimate of what its prefix cache holds.

Blocks are recorded last to first, so a prompt's first block is its most recent entry and
eviction takes chains from their tail. The set of a chain's recorded blocks is then always
a prefix of it, and the longest match is found by binary search: O(log blocks) a lookup,
whatever the record's size."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence


class PrefixRecord:
    def __init__(self, max_blocks: int) -> None:
        self._max = max_blocks
        self._blocks: OrderedDict[int, None] = OrderedDict()

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

    def record(self, hashes: Sequence[int]) -> None:
        blocks = self._blocks
        for h in reversed(hashes):
            if h in blocks:
                blocks.move_to_end(h)
            else:
                blocks[h] = None
        while len(blocks) > self._max:
            blocks.popitem(last=False)
