"""A Llama-family forward pass over a slot KV cache, reading a loaded Hugging Face model's
weight tensors in place.

Three entry points: `prefill` runs one slot's prompt (causal attention among its own
tokens); `prefill_chunks` extends several slots at once, each by a chunk of its prompt
after the positions it already holds (earlier chunks, a prefix loaded from the prefix
store), padded to the longest chunk; `decode` appends one token to each of several slots
at once, slots at different lengths, attending to each slot's cached positions through a
padding mask. All return float32 logits whatever the model's dtype; a prefill projects only
its last position onto the vocabulary unless asked for every position (prompt scoring)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from providers.local.runner import PrefillChunk
from providers.local.slots import DEFAULT_MAX_SLOTS, SlotLimits, context_limit
from providers.torch.chunks import ChunkPlan
from providers.torch.kv_cache import SlotKVCache, slot_selector
from providers.torch.llama_weights import (
    LayerWeights,
    check_sliding_window,
    llama_shape,
    llama_weights,
    rotary_tables,
)
from providers.torch.prefix_store import PrefixStore

# (layer index, queries [B, H, T, D], keys, values [B, KV, T, D]) -> attention [B, H, T, D]
Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class LlamaForward:
    """The model's forward pass with `max_slots` cached sequences of `max_context` tokens."""

    def __init__(
        self,
        model: PreTrainedModel,
        *,
        max_slots: int = DEFAULT_MAX_SLOTS,
        max_context: int | None = None,
        prefix_tokens: int = 0,
        block_tokens: int = 16,
    ) -> None:
        config = model.config
        self.shape = llama_shape(config)
        self.limits = SlotLimits(max_slots, context_limit(max_context, self.shape.context_window))
        limit = self.limits.max_context
        check_sliding_window(config, limit)
        self.weights = llama_weights(model)
        embed = self.weights.embed
        self.device, self.dtype = embed.device, embed.dtype
        self.cache = SlotKVCache(
            layers=self.shape.layers,
            slots=max_slots,
            kv_heads=self.shape.kv_heads,
            context=limit,
            head_dim=self.shape.head_dim,
            dtype=self.dtype,
            device=self.device,
            block_tokens=block_tokens,
        )
        self.store = PrefixStore(
            layers=self.shape.layers,
            blocks=prefix_tokens // block_tokens,
            kv_heads=self.shape.kv_heads,
            block_tokens=block_tokens,
            head_dim=self.shape.head_dim,
            dtype=self.dtype,
            device=self.device,
        )
        with torch.inference_mode():
            self.cos, self.sin = rotary_tables(config, self.shape, limit, self.dtype, self.device)

    @property
    def max_slots(self) -> int:
        return self.limits.max_slots

    @property
    def max_context(self) -> int:
        return self.limits.max_context

    @property
    def vocab_size(self) -> int:
        return self.shape.vocab_size

    def length(self, slot: int) -> int:
        return self.cache.lengths[self.limits.slot(slot)]

    def prefill(
        self, slot: int, tokens: Sequence[int], *, every_position: bool = False
    ) -> torch.Tensor:
        """Replace `slot`'s contents with `tokens`; the logits of the last position [1, V],
        or of every position [L, V] if `every_position`."""
        slot = self.limits.slot(slot)
        count = self.limits.prompt(tokens)
        # Emptied first: a forward that fails midway must not leave the old length pointing
        # at half-overwritten positions.
        self.cache.lengths[slot] = 0
        self.cache.ensure(count)
        with torch.inference_mode():
            ids = torch.tensor([list(tokens)], dtype=torch.long, device=self.device)
            cos, sin = self.cos[None, None, :count], self.sin[None, None, :count]

            def attend(
                layer: int, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
            ) -> torch.Tensor:
                self.cache.write_prefix(layer, slot, keys[0], values[0])
                return F.scaled_dot_product_attention(
                    queries, keys, values, is_causal=True, enable_gqa=True
                )

            pick = None if every_position else _last_position
            logits = self._forward(ids, cos, sin, attend, pick=pick)[0]
        self.cache.lengths[slot] = count
        return logits

    def prefill_chunks(self, chunks: Sequence[PrefillChunk]) -> list[torch.Tensor]:
        """Extend each chunk's slot by its tokens at positions `start`.., in one forward
        pass padded to the longest chunk; per chunk, its last position's logits [1, V], or
        every position's [L, V] if `every_position`."""
        plan = ChunkPlan.check(self.limits, self.cache.lengths, chunks)
        if len(chunks) == 1 and chunks[0].start == 0:  # nothing cached to attend to
            only = chunks[0]
            return [self.prefill(only.slot, only.tokens, every_position=only.every_position)]
        for chunk in chunks:  # a forward failing midway leaves no length past valid data
            self.cache.lengths[chunk.slot] = min(self.cache.lengths[chunk.slot], chunk.start)
        self.cache.ensure(plan.upto)
        with torch.inference_mode():
            tensors = plan.tensors(self.device)
            rotary = tensors.positions.clamp(max=self.max_context - 1)
            cos, sin = self.cos[rotary][:, None], self.sin[rotary][:, None]
            selector = slot_selector(plan.slots, self.device)

            def attend(
                layer: int, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
            ) -> torch.Tensor:
                # Only real positions are written: padding never lands in a slot.
                real_keys = keys.transpose(1, 2)[tensors.rows, tensors.steps]
                real_values = values.transpose(1, 2)[tensors.rows, tensors.steps]
                self.cache.write_step(
                    layer, tensors.write_slots, tensors.write_positions, real_keys, real_values
                )
                cached_keys, cached_values = self.cache.window(layer, selector, plan.upto)
                return F.scaled_dot_product_attention(
                    queries, cached_keys, cached_values, attn_mask=tensors.mask, enable_gqa=True
                )

            picked = self._forward(
                tensors.ids, cos, sin, attend, pick=lambda h: h[tensors.out_rows, tensors.out_steps]
            )
        for chunk in chunks:
            self.cache.lengths[chunk.slot] = chunk.start + len(chunk.tokens)
        return list(torch.split(picked, plan.outputs))

    def decode(self, slots: Sequence[int], tokens: Sequence[int]) -> torch.Tensor:
        """Append tokens[b] to slots[b]; next-token logits [len(slots), V]."""
        batch = self.limits.batch(slots, tokens)
        lengths = [self.cache.lengths[slot] for slot in batch]
        self.limits.room(lengths)
        upto = max(lengths) + 1
        self.cache.ensure(upto)
        with torch.inference_mode():
            ids = torch.tensor(tokens, dtype=torch.long, device=self.device)[:, None]
            slot_ids = torch.tensor(batch, dtype=torch.long, device=self.device)
            positions = torch.tensor(lengths, dtype=torch.long, device=self.device)
            cos, sin = self.cos[positions][:, None, None], self.sin[positions][:, None, None]
            selector = slot_selector(batch, self.device)
            # Slot b may attend to its positions 0..lengths[b] (the new token included).
            visible = torch.arange(upto, device=self.device)[None, :] <= positions[:, None]
            mask = visible[:, None, None, :]

            def attend(
                layer: int, queries: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
            ) -> torch.Tensor:
                self.cache.write_step(layer, slot_ids, positions, keys[:, :, 0], values[:, :, 0])
                cached_keys, cached_values = self.cache.window(layer, selector, upto)
                return F.scaled_dot_product_attention(
                    queries, cached_keys, cached_values, attn_mask=mask, enable_gqa=True
                )

            logits = self._forward(ids, cos, sin, attend)[:, 0]
        for slot, length in zip(batch, lengths, strict=True):
            self.cache.lengths[slot] = length + 1
        return logits

    def copy_slot(self, source: int, target: int) -> None:
        with torch.inference_mode():
            self.cache.copy(self.limits.slot(source), self.limits.slot(target))

    def free(self, slot: int) -> None:
        self.cache.free(self.limits.slot(slot))

    def save_blocks(self, slot: int, blocks: Sequence[tuple[int, int]]) -> None:
        self.store.save(self.cache, self.limits.slot(slot), blocks)

    def load_blocks(self, slot: int, block_ids: Sequence[int]) -> None:
        self.store.load(self.cache, self.limits.slot(slot), block_ids)

    def _forward(
        self,
        ids: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attend: Attend,
        *,
        pick: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """ids [B, T] -> float32 logits [B, T, V], or of the positions `pick` takes from
        the final hidden states; `attend` stores K/V and attends."""
        hidden = F.embedding(ids, self.weights.embed)
        for index, layer in enumerate(self.weights.layers):
            hidden = self._block(index, layer, hidden, cos, sin, attend)
        if pick is not None:  # the vocabulary projection is the largest matmul of a prompt
            hidden = pick(hidden)
        hidden = _rms_norm(hidden, self.weights.final_norm, self.shape.rms_eps)
        return self.weights.lm_head(hidden).float()

    def _block(
        self,
        index: int,
        layer: LayerWeights,
        hidden: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attend: Attend,
    ) -> torch.Tensor:
        batch, steps, _ = hidden.shape
        shape = self.shape
        normed = _rms_norm(hidden, layer.input_norm, shape.rms_eps)
        queries = _heads(layer.q(normed), shape.heads, shape.head_dim)
        keys = _heads(layer.k(normed), shape.kv_heads, shape.head_dim)
        values = _heads(layer.v(normed), shape.kv_heads, shape.head_dim)
        queries, keys = _rotate(queries, cos, sin), _rotate(keys, cos, sin)
        attended = attend(index, queries, keys, values)
        merged = attended.transpose(1, 2).reshape(batch, steps, shape.heads * shape.head_dim)
        hidden = hidden + layer.o(merged)
        normed = _rms_norm(hidden, layer.post_norm, shape.rms_eps)
        return hidden + layer.down(F.silu(layer.gate(normed)) * layer.up(normed))


def _last_position(hidden: torch.Tensor) -> torch.Tensor:
    return hidden[:, -1:]


def _heads(projected: torch.Tensor, heads: int, head_dim: int) -> torch.Tensor:
    """[B, T, heads * D] -> [B, heads, T, D]."""
    batch, steps, _ = projected.shape
    return projected.view(batch, steps, heads, head_dim).transpose(1, 2)


def _rms_norm(hidden: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # Normalized in float32 and cast back before the weight, exactly as transformers does:
    # in bf16 the order of the cast changes the logits.
    as_float = hidden.float()
    variance = as_float.pow(2).mean(-1, keepdim=True)
    return weight * (as_float * torch.rsqrt(variance + eps)).to(hidden.dtype)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
