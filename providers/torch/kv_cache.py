"""Preallocated per-slot KV cache: one key and one value tensor for all layers and slots,
and how many positions of each slot hold a sequence.

A slot's positions beyond its length hold stale data from an earlier sequence (or zeros);
attention masks them, so `free` costs nothing. The tensors start zeroed, never `empty`:
uninitialized memory may hold NaNs, and a masked NaN in V still poisons 0 * NaN sums."""

from __future__ import annotations

import torch

# Which slots a decode step touches: a contiguous run reads the cache as a view, anything
# else is gathered into a copy.
SlotSelector = slice | torch.Tensor


class SlotKVCache:
    """Keys and values shaped [layers, slots, kv_heads, context, head_dim]."""

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
    ) -> None:
        shape = (layers, slots, kv_heads, context, head_dim)
        with torch.inference_mode():
            self.keys = torch.zeros(shape, dtype=dtype, device=device)
            self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.max_slots = slots
        self.max_context = context
        self.lengths = [0] * slots

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
        """Store one position per slot: slot slots[b] at positions[b]; keys [B, kv_heads, D]."""
        # Paired advanced indices (slot b with position b), never a slice: a slice in the
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


def slot_selector(slots: list[int], device: torch.device) -> SlotSelector:
    """A slice when `slots` is an ascending contiguous run (the common case), else indices."""
    first = slots[0]
    if slots == list(range(first, first + len(slots))):
        return slice(first, first + len(slots))
    return torch.tensor(slots, dtype=torch.long, device=device)
