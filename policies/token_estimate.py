"""The tokens a request is charged before its answer is known: the prompt's estimate, read
once per upstream call, plus what its completion may use (policies/limits.py reserves it,
and corrects it once the usage is known)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policies.rules import estimate_prompt_tokens

COMPLETIONS_DEFAULT_MAX_TOKENS = 16
# A chat without max_tokens may run to the model's context; reserving all of it would
# refuse most chats under a tpm limit, reserving nothing lets concurrent chats overrun
# it. A typical answer's size is reserved, and corrected once the usage is known.
CHAT_COMPLETION_RESERVE = 256


def estimate_tokens(body: Mapping[str, Any], prompt_reads: int = 1) -> int:
    """Tokens to reserve before the answer is known: the prompt's estimate (times
    `prompt_reads`, the upstream calls that each read all of it) plus what the completion
    may use (`max_tokens`; completions default to 16, chat without a limit reserves
    `CHAT_COMPLETION_RESERVE`), times the candidates, for each prompt of a batch.
    Embeddings: the input."""
    prompt, completion = estimate_parts(body, prompt_reads)
    return prompt + completion


def estimate_parts(body: Mapping[str, Any], prompt_reads: int = 1) -> tuple[int, int]:
    """`estimate_tokens` in its two parts, prompt and completion, which are priced apart."""
    allowed = body.get("max_completion_tokens") or body.get("max_tokens")
    if allowed is None and "prompt" in body:
        allowed = COMPLETIONS_DEFAULT_MAX_TOKENS
    elif allowed is None and "messages" in body:
        allowed = CHAT_COMPLETION_RESERVE
    n = body.get("best_of") or body.get("n") or 1
    completion = int(allowed or 0) * int(n) * _prompts(body) if isinstance(n, int) else 0
    return estimate_prompt_tokens(body) * max(1, prompt_reads), completion


def _prompts(body: Mapping[str, Any]) -> int:
    """Prompts in a completions batch (a list of token ids is one prompt); else 1."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and not all(isinstance(t, int) for t in prompt):
        return len(prompt)
    return 1
