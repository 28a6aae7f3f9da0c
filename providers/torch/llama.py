"""A Llama-family forward pass over a slot KV cache, reading a loaded Hugging Face model's
weight tensors in place.

Two entry points: `prefill` runs one slot's prompt (causal attention among its own tokens)
and `decode` appends one token to each of several slots at once, slots at different
lengths, attending to each slot's cached positions through a padding mask. Both return
float32 logits whatever the model's dtype; a prefill projects only its last position onto
the vocabulary unless asked for every position (prompt scoring)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from providers.local.slots import DEFAULT_MAX_SLOTS, SlotLimits, context_limit
from providers.torch.kv_cache import SlotKVCache, slot_selector
from providers.torch.llama_weights import (
    LayerWeights,
    check_sliding_window,
    llama_shape,
    llama_weights,
    rotary_tables,
)

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

            logits = self._forward(ids, cos, sin, attend, last_only=not every_position)[0]
        self.cache.lengths[slot] = count
        return logits

    def decode(self, slots: Sequence[int], tokens: Sequence[int]) -> torch.Tensor:
        """Append tokens[b] to slots[b]; next-token logits [len(slots), V]."""
        batch = self.limits.batch(slots, tokens)
        lengths = [self.cache.lengths[slot] for slot in batch]
        self.limits.room(lengths)
        with torch.inference_mode():
            ids = torch.tensor(tokens, dtype=torch.long, device=self.device)[:, None]
            slot_ids = torch.tensor(batch, dtype=torch.long, device=self.device)
            positions = torch.tensor(lengths, dtype=torch.long, device=self.device)
            cos, sin = self.cos[positions][:, None, None], self.sin[positions][:, None, None]
            upto = max(lengths) + 1
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

    def _forward(
        self,
        ids: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        attend: Attend,
        *,
        last_only: bool = False,
    ) -> torch.Tensor:
        """ids [B, T] -> float32 logits [B, T, V] ([B, 1, V] of the last position if
        `last_only`); `attend` stores K/V and attends."""
        hidden = F.embedding(ids, self.weights.embed)
        for index, layer in enumerate(self.weights.layers):
            hidden = self._block(index, layer, hidden, cos, sin, attend)
        if last_only:  # the vocabulary projection is the largest matmul of a short prompt
            hidden = hidden[:, -1:]
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
