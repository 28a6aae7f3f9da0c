"""`TorchRunner`: the engine's `ModelRunner` on the PyTorch Llama forward pass, counting its
forward passes and the prompt tokens they computed, so tests can prove what shares a
prefill and what the prefix store spared."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from providers.local.runner import ForwardCounts, PrefillChunk
from providers.local.slots import DEFAULT_MAX_SLOTS
from providers.torch.llama import LlamaForward
from providers.torch.loading import LoadedModel


class TorchRunner:
    """Prefill and batched decode over `max_slots` KV-cache slots (see `ModelRunner`)."""

    def __init__(self, forward: LlamaForward) -> None:
        self.forward = forward
        self.max_slots = forward.max_slots
        self.max_context = forward.max_context
        self.vocab_size = forward.vocab_size
        self.block_tokens = forward.store.block_tokens
        self.store_blocks = forward.store.blocks
        self.counts = ForwardCounts()

    @classmethod
    def from_loaded(
        cls,
        loaded: LoadedModel,
        *,
        max_slots: int = DEFAULT_MAX_SLOTS,
        max_context: int | None = None,
        prefix_tokens: int = 0,
        block_tokens: int = 16,
    ) -> TorchRunner:
        """`prefix_tokens`: positions the prefix store holds (0: no prefix cache)."""
        forward = LlamaForward(
            loaded.model,
            max_slots=max_slots,
            max_context=max_context,
            prefix_tokens=prefix_tokens,
            block_tokens=block_tokens,
        )
        return cls(forward)

    def prefill(
        self, slot: int, tokens: Sequence[int], *, every_position: bool = False
    ) -> torch.Tensor:
        logits = self.forward.prefill(slot, tokens, every_position=every_position)
        self.counts.prefills += 1
        self.counts.prefill_tokens += len(tokens)
        return logits

    def prefill_chunks(self, chunks: Sequence[PrefillChunk]) -> list[torch.Tensor]:
        logits = self.forward.prefill_chunks(chunks)
        self.counts.prefills += 1
        self.counts.prefill_tokens += sum(len(chunk.tokens) for chunk in chunks)
        return logits

    def decode(self, slots: Sequence[int], tokens: Sequence[int]) -> torch.Tensor:
        logits = self.forward.decode(slots, tokens)
        self.counts.decodes += 1
        self.counts.decode_tokens += len(tokens)
        return logits

    def copy_slot(self, source: int, target: int) -> None:
        self.forward.copy_slot(source, target)

    def free(self, slot: int) -> None:
        self.forward.free(slot)

    def save_blocks(self, slot: int, blocks: Sequence[tuple[int, int]]) -> None:
        self.forward.save_blocks(slot, blocks)

    def load_blocks(self, slot: int, block_ids: Sequence[int]) -> None:
        self.forward.load_blocks(slot, block_ids)

    def length(self, slot: int) -> int:
        """How many positions `slot` holds."""
        return self.forward.length(slot)
