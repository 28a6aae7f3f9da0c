"""Which prompt prefixes' KV blocks the prefix store holds: an index of whole blocks of
token ids, chained from the first block, least recently used evicted first.

A block is `block_tokens` positions. Its key is (the block before it's id, its own token
ids): the dict compares whole keys, so two prefixes are never confused (no hash whose
collision would hand one prompt another's cache), and a block is only ever found behind the
very chain of blocks it was computed after, as attention requires. The framework's tensors
live in the runner's store (`ModelRunner.save_blocks` / `load_blocks`); this index only
says which store block holds which prefix, so the PyTorch and JAX runners share it.

Eviction takes the least recently used block together with every block chained behind it
(they could no longer be reached, and a reused id must not let them match). A lookup
refreshes a chain from its last block back to its first, so that a chain's head is always
more recent than its tail and eviction trims chains from the end.

Hand-written: vLLM's and SGLang's prefix caches are bound to their own block managers and
kernels; this is the ~100 lines of bookkeeping they share, over plain dicts."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

NO_PARENT = -1

BlockKey = tuple[int, tuple[int, ...]]


@dataclass(slots=True)
class PrefixStats:
    """Prompt tokens looked up, and how many of them came from the store."""

    looked_up: int = 0
    reused: int = 0
    evicted_blocks: int = 0


@dataclass(slots=True)
class _Block:
    key: BlockKey
    children: set[int] = field(default_factory=set)


class PrefixIndex:
    """Up to `capacity` blocks of `block_tokens` positions; ids are 0..capacity-1."""

    def __init__(self, block_tokens: int, capacity: int) -> None:
        if block_tokens < 1:
            raise ValueError(f"block_tokens must be at least 1, got {block_tokens}")
        self.block_tokens = block_tokens
        self.capacity = max(0, capacity)
        self.stats = PrefixStats()
        self._ids: dict[BlockKey, int] = {}
        self._blocks: OrderedDict[int, _Block] = OrderedDict()  # oldest use first
        self._free = list(range(self.capacity - 1, -1, -1))

    def __len__(self) -> int:
        return len(self._blocks)

    def match(self, tokens: Sequence[int], limit: int) -> list[int]:
        """Store block ids holding the longest run of whole blocks at the head of
        `tokens`, covering at most `limit` tokens; the run is marked recently used.
        `stats.reused` counts at most all but the last of `tokens`: a prompt's last
        position is computed even when the store holds it (its logits are needed)."""
        found = self._chain(tokens, limit)
        for block_id in reversed(found):
            self._blocks.move_to_end(block_id)
        self.stats.looked_up += len(tokens)
        self.stats.reused += min(len(found) * self.block_tokens, max(0, len(tokens) - 1))
        return found

    def cached_tokens(self, tokens: Sequence[int]) -> int:
        """How many leading tokens of `tokens` the store holds (whole blocks), without
        touching the LRU order: what a router may ask before sending a prompt here."""
        return len(self._chain(tokens, len(tokens))) * self.block_tokens

    def claim(self, tokens: Sequence[int], upto: int) -> list[tuple[int, int]]:
        """Make room for the whole blocks of `tokens[:upto]` the index lacks. Returns
        (block index in the sequence, store block id) for each block the caller must now
        copy into the store; blocks already held are only refreshed. Stops early when the
        store is full of the chain being claimed itself."""
        if not self.capacity:
            return []
        size = self.block_tokens
        parent = NO_PARENT
        claimed: list[tuple[int, int]] = []
        chain: list[int] = []
        for index in range(min(upto, len(tokens)) // size):
            key = (parent, tuple(tokens[index * size : (index + 1) * size]))
            block_id = self._ids.get(key)
            if block_id is None:
                block_id = self._take(protect=chain)
                if block_id is None:
                    break
                self._ids[key] = block_id
                self._blocks[block_id] = _Block(key)
                if parent != NO_PARENT:
                    self._blocks[parent].children.add(block_id)
                claimed.append((index, block_id))
            chain.append(block_id)
            parent = block_id
        for block_id in reversed(chain):
            self._blocks.move_to_end(block_id)
        return claimed

    def forget(self, block_ids: Sequence[int]) -> None:
        """Drop blocks whose copy into the store failed (and what is chained behind them)."""
        for block_id in block_ids:
            if block_id in self._blocks:
                self._evict(block_id)

    def clear(self) -> None:
        """Forget everything (the store's tensors were lost, e.g. a failed JAX step)."""
        self._ids.clear()
        self._blocks.clear()
        self._free = list(range(self.capacity - 1, -1, -1))

    def _chain(self, tokens: Sequence[int], limit: int) -> list[int]:
        size = self.block_tokens
        parent = NO_PARENT
        found: list[int] = []
        for index in range(min(limit, len(tokens)) // size):
            block_id = self._ids.get((parent, tuple(tokens[index * size : (index + 1) * size])))
            if block_id is None:
                break
            found.append(block_id)
            parent = block_id
        return found

    def _take(self, protect: list[int]) -> int | None:
        """A free block id, evicting the least recently used chain tail if none is free;
        None if every block belongs to `protect` (the chain being claimed)."""
        if not self._free:
            guarded = set(protect)
            victim = next((b for b in self._blocks if b not in guarded), None)
            if victim is None:
                return None
            self._evict(victim)
        return self._free.pop()

    def _evict(self, block_id: int) -> None:
        pending = [block_id]
        while pending:
            current = pending.pop()
            block = self._blocks.pop(current, None)
            if block is None:
                continue
            del self._ids[block.key]
            parent = block.key[0]
            if parent in self._blocks:
                self._blocks[parent].children.discard(current)
            pending.extend(block.children)
            self._free.append(current)
            self.stats.evicted_blocks += 1
