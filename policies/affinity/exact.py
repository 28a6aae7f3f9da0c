"""What a deployment's own prefix cache holds of a prompt, where its backend can say (the
in-process samplers: `Provider.cached_prompt_tokens`), in the record's unit.

The record (policies/affinity/record.py) estimates from what Turnout sent; an in-process
engine knows exactly which KV blocks it kept and which it evicted. Its figure is in tokens
of its own rendering of the prompt, the record's in leading blocks of `block_chars`
characters of Turnout's: held tokens over prompt tokens, times the prompt's blocks,
floored, puts the two on one scale (tokens and characters run through a prompt nearly in
proportion; a block only counts once wholly held).

Only deployments whose backend has the hook are asked, all at once: a pool of remote
APIs asks nothing and awaits nothing (the decision's budget is 50 µs)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from providers.base import CachedPromptTokens


def exact_blocks(held_tokens: int, prompt_tokens: int, blocks: int) -> int:
    """`held_tokens` of a prompt of `prompt_tokens` tokens as leading blocks of its `blocks`."""
    if prompt_tokens <= 0 or held_tokens <= 0:
        return 0
    return min(blocks, held_tokens * blocks // prompt_tokens)


async def backend_figures(
    asks: Sequence[tuple[str, CachedPromptTokens]], body: Mapping[str, Any]
) -> dict[str, tuple[int, int]]:
    """(Held tokens, prompt tokens) by label, from each backend asked that could tell."""
    answers = await asyncio.gather(*(probe(body) for _, probe in asks))
    labels = (label for label, _ in asks)
    return {label: held for label, held in zip(labels, answers, strict=True) if held is not None}
