"""The prefix store: KV blocks of recently used prompt prefixes, kept apart from the slots
so that a later prompt starting alike loads them instead of recomputing them.

Which block holds which prefix is `providers.local.prefix_cache.PrefixIndex`'s business;
this module only copies blocks of `block_tokens` positions between a slot of the
`SlotKVCache` and the store's own pair of tensors, every layer at once."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from providers.torch.kv_cache import SlotKVCache


class PrefixStore:
    """Keys and values shaped [layers, blocks, kv_heads, block_tokens, head_dim]."""

    def __init__(
        self,
        *,
        layers: int,
        blocks: int,
        kv_heads: int,
        block_tokens: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.blocks = blocks
        self.block_tokens = block_tokens
        self._device = device
        shape = (layers, blocks, kv_heads, block_tokens, head_dim)
        with torch.inference_mode():
            self.keys = torch.zeros(shape, dtype=dtype, device=device)
            self.values = torch.zeros(shape, dtype=dtype, device=device)

    def save(self, cache: SlotKVCache, slot: int, blocks: Sequence[tuple[int, int]]) -> None:
        """Copy, for each (i, block id), `slot`'s block i (positions i*block_tokens..) into
        that store block."""
        if not blocks:
            return
        size = self.block_tokens
        if max(index for index, _ in blocks) * size + size > cache.lengths[slot]:
            raise ValueError("a block to save lies beyond what the slot holds")
        positions = torch.tensor(
            [index * size + offset for index, _ in blocks for offset in range(size)],
            dtype=torch.long,
            device=self._device,
        )
        targets = torch.tensor([block for _, block in blocks], device=self._device)
        with torch.inference_mode():
            for source, store in ((cache.keys, self.keys), (cache.values, self.values)):
                picked = source[:, slot].index_select(2, positions)  # [layers, kv, n*size, D]
                layers, kv_heads, _, head_dim = picked.shape
                shaped = picked.view(layers, kv_heads, len(blocks), size, head_dim)
                store.index_copy_(1, targets, shaped.transpose(1, 2))

    def load(self, cache: SlotKVCache, slot: int, block_ids: Sequence[int]) -> None:
        """Make `slot` hold the blocks' positions in order; its length becomes
        len(block_ids) * block_tokens."""
        length = len(block_ids) * self.block_tokens
        if length > cache.max_context:
            raise ValueError(f"{length} positions do not fit a slot of {cache.max_context}")
        cache.lengths[slot] = 0  # a load that fails midway leaves an empty slot
        cache.ensure(length)
        if not block_ids:
            return
        ids = torch.tensor(list(block_ids), dtype=torch.long, device=self._device)
        with torch.inference_mode():
            for store, target in ((self.keys, cache.keys), (self.values, cache.values)):
                picked = store.index_select(1, ids)  # [layers, n, kv, size, D]
                # The slot's positions seen as [layers, kv, n, size, D]: one copy into place.
                layers, _, kv_heads, size, head_dim = picked.shape
                held = target[:, slot, :, :length].view(layers, kv_heads, len(ids), size, head_dim)
                held.copy_(picked.transpose(1, 2))
        cache.lengths[slot] = length
