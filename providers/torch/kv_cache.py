"""Per-slot KV cache that grows with the longest live sequence: one key and one value
tensor for all layers and slots, and how many positions of each slot hold a sequence.

`max_slots x max_context` is an upper bound, not an allocation: the tensors hold
`capacity` positions per slot, a whole number of blocks, doubled (up to `max_context`)
when a write needs more. When every slot is empty the cache shrinks to what the busy
spell just ended needed, if that is less than half of what it holds: a steady load never
reallocates (regrowing costs a prefill a zeroed allocation), and the memory of a one-off
long sequence is given back after the next, shorter, spell. Each
slot keeps one contiguous run of positions, so a decode step over a contiguous run of slots
reads its cache as a view of the tensors, with no gather and no copy per step (a paged
layout would gather every step's keys; at this model size that is slower than the rare
doubling copy).

A slot's positions beyond its length hold stale data from an earlier sequence (or zeros);
attention masks them, so `free` costs nothing. The tensors start zeroed, never `empty`:
uninitialized memory may hold NaNs, and a masked NaN in V still poisons 0 * NaN sums."""

from __future__ import annotations

import torch

# Which slots a decode step touches: a contiguous run reads the cache as a view, anything
# else is gathered into a copy.
SlotSelector = slice | torch.Tensor

FIRST_CAPACITY = 256  # positions per slot allocated at first (rounded to whole blocks)


class SlotKVCache:
    """Keys and values shaped [layers, slots, kv_heads, capacity, head_dim]."""

    def __init__(
        self,
        *,
        layers: int,
        slots: int,
        kv_heads: int,
        context: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
        block_tokens: int = 16,
    ) -> None:
        self._shape = (layers, slots, kv_heads, head_dim)
        self._dtype, self._device = dtype, device
        self.max_slots = slots
        self.max_context = context
        self.block_tokens = block_tokens
        self.first_capacity = min(context, _whole_blocks(FIRST_CAPACITY, block_tokens))
        self.lengths = [0] * slots
        self._peak = 0  # the most positions a slot needed since the cache was last idle
        self.keys, self.values = self._allocate(self.first_capacity)

    @property
    def capacity(self) -> int:
        """Positions each slot can hold now, without growing."""
        return self.keys.shape[3]

    def ensure(self, positions: int) -> None:
        """Grow (doubling, whole blocks, at most `max_context`) until every slot can hold
        `positions` positions; what the slots hold is kept."""
        self._peak = max(self._peak, positions)
        if positions <= self.capacity:
            return
        keys, values = self._allocate(self._fitting(positions, self.capacity))
        held = max(self.lengths)
        with torch.inference_mode():
            keys[:, :, :, :held] = self.keys[:, :, :, :held]
            values[:, :, :, :held] = self.values[:, :, :, :held]
        self.keys, self.values = keys, values

    def write_prefix(self, layer: int, slot: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        """Store a slot's first positions; keys/values [kv_heads, L, head_dim]."""
        length = keys.shape[1]
        self.keys[layer, slot, :, :length] = keys
        self.values[layer, slot, :, :length] = values

    def write_step(
        self,
        layer: int,
        slots: torch.Tensor,
        positions: torch.Tensor,
        keys: torch.Tensor,
        values: torch.Tensor,
    ) -> None:
        """Store one position per entry: slot slots[n] at positions[n]; keys [N, kv_heads, D]."""
        # Paired advanced indices (slot n with position n), never a slice: a slice in the
        # slot dimension would index the outer product of slots and positions.
        self.keys[layer][slots, :, positions] = keys
        self.values[layer][slots, :, positions] = values

    def window(
        self, layer: int, slots: SlotSelector, upto: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the first `upto` positions of the selected slots [B, kv, upto, D]."""
        keys = self.keys[layer, :, :, :upto]
        values = self.values[layer, :, :, :upto]
        if isinstance(slots, slice):
            return keys[slots], values[slots]
        return keys.index_select(0, slots), values.index_select(0, slots)

    def copy(self, source: int, target: int) -> None:
        length = self.lengths[source]
        if source != target:
            self.keys[:, target, :, :length] = self.keys[:, source, :, :length]
            self.values[:, target, :, :length] = self.values[:, source, :, :length]
        self.lengths[target] = length

    def free(self, slot: int) -> None:
        self.lengths[slot] = 0
        if any(self.lengths):
            return
        peak, self._peak = self._peak, 0
        needed = self._fitting(peak, self.first_capacity)
        if needed < self.capacity and 2 * peak < self.capacity:  # idle, holding 2x the need
            self.keys, self.values = self._allocate(needed)

    def _fitting(self, positions: int, capacity: int) -> int:
        """`capacity` doubled until it holds `positions`, in whole blocks, at most
        `max_context`."""
        while capacity < positions:
            capacity *= 2
        return min(self.max_context, _whole_blocks(capacity, self.block_tokens))

    def _allocate(self, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
        layers, slots, kv_heads, head_dim = self._shape
        shape = (layers, slots, kv_heads, capacity, head_dim)
        with torch.inference_mode():
            keys = torch.zeros(shape, dtype=self._dtype, device=self._device)
            values = torch.zeros(shape, dtype=self._dtype, device=self._device)
        return keys, values


def _whole_blocks(positions: int, block_tokens: int) -> int:
    return -(-positions // block_tokens) * block_tokens


def slot_selector(slots: list[int], device: torch.device) -> SlotSelector:
    """A slice when `slots` is an ascending contiguous run (the common case), else indices."""
    first = slots[0]
    if slots == list(range(first, first + len(slots))):
        return slice(first, first + len(slots))
    return torch.tensor(slots, dtype=torch.long, device=device)
