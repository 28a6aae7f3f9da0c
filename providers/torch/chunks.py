"""How a batch of prefill chunks becomes one padded forward pass: row b holds chunk b's
tokens, padded to the longest chunk; each real position is written to its slot at
`start + t`, attends to its slot's positions 0..start+t, and is rotated as position
`start + t`. Padded positions are computed but never written to a slot and never read
back, so they are harmless whatever they attend to."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from providers.local.runner import PrefillChunk
from providers.local.slots import SlotLimits


@dataclass(frozen=True, slots=True)
class ChunkTensors:
    ids: torch.Tensor  # [B, T], padded with token 0
    positions: torch.Tensor  # [B, T]: start + t (past the real tokens too)
    mask: torch.Tensor  # [B, 1, T, upto]: key position j visible to query t
    rows: torch.Tensor  # the real (row, step) pairs, flattened ...
    steps: torch.Tensor
    write_slots: torch.Tensor  # ... and where each is written: its slot, its position
    write_positions: torch.Tensor
    out_rows: torch.Tensor  # the (row, step) pairs whose logits are returned
    out_steps: torch.Tensor


@dataclass(frozen=True, slots=True)
class ChunkPlan:
    chunks: Sequence[PrefillChunk]
    slots: list[int]
    upto: int  # the positions the longest slot holds after the pass
    outputs: list[int]  # logits rows per chunk: 1, or the chunk's length

    @classmethod
    def check(
        cls, limits: SlotLimits, lengths: Sequence[int], chunks: Sequence[PrefillChunk]
    ) -> ChunkPlan:
        """The plan, or ValueError for chunks no slot can take: distinct existing slots,
        at least one token each, starting within what the slot holds, ending within it."""
        if not chunks:
            raise ValueError("prefill_chunks needs at least one chunk")
        slots = [limits.slot(chunk.slot) for chunk in chunks]
        if len(set(slots)) != len(slots):
            raise ValueError("prefill chunks need distinct slots")
        for chunk in chunks:
            end = chunk.start + len(chunk.tokens)
            if not chunk.tokens or not 0 <= chunk.start <= lengths[chunk.slot]:
                raise ValueError(
                    f"a chunk needs tokens and a start within slot {chunk.slot}'s "
                    f"{lengths[chunk.slot]} positions, got {len(chunk.tokens)} at {chunk.start}"
                )
            if end > limits.max_context:
                raise ValueError(f"a chunk ends at {end}, past {limits.max_context} positions")
        upto = max(chunk.start + len(chunk.tokens) for chunk in chunks)
        outputs = [len(c.tokens) if c.every_position else 1 for c in chunks]
        return cls(chunks, slots, upto, outputs)

    def tensors(self, device: torch.device) -> ChunkTensors:
        chunks = self.chunks
        width = max(len(chunk.tokens) for chunk in chunks)
        ids = [list(chunk.tokens) + [0] * (width - len(chunk.tokens)) for chunk in chunks]
        real = [(b, t) for b, chunk in enumerate(chunks) for t in range(len(chunk.tokens))]
        out = [
            (b, t)
            for b, chunk in enumerate(chunks)
            for t in range(0 if chunk.every_position else len(chunk.tokens) - 1, len(chunk.tokens))
        ]
        starts = torch.tensor([chunk.start for chunk in chunks], dtype=torch.long, device=device)
        positions = starts[:, None] + torch.arange(width, device=device)[None, :]
        keys = torch.arange(self.upto, device=device)
        mask = keys[None, None, :] <= positions[:, :, None]  # [B, T, upto]

        def column(pairs: list[tuple[int, int]], side: int) -> torch.Tensor:
            return torch.tensor([pair[side] for pair in pairs], dtype=torch.long, device=device)

        rows, steps = column(real, 0), column(real, 1)
        return ChunkTensors(
            ids=torch.tensor(ids, dtype=torch.long, device=device),
            positions=positions,
            mask=mask[:, None],
            rows=rows,
            steps=steps,
            write_slots=torch.tensor(self.slots, dtype=torch.long, device=device)[rows],
            write_positions=positions[rows, steps],
            out_rows=column(out, 0),
            out_steps=column(out, 1),
        )
