"""A prompt on its way into the KV cache: admitted to slots, its prefix loaded from the
prefix store, the rest prefilled a chunk per engine step within a token budget that the
waiting prompts share, oldest first: `prefill_chunk_tokens` while streams decode beside
the prefill, the engine's larger cold budget, counted in padded tokens, while none do.

A prompt-scoring job (echo with logprobs) needs every position's logits and reuses no
prefix. Its chunks after the first also recompute their previous position (a chunk may
start within what a slot holds), so that each chunk's logits score its own tokens and
`score_prompt` runs per chunk: the engine never has to concatenate framework tensors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from providers.local.job import Job
from providers.local.runner import PrefillChunk, PromptScores, Sampler


@dataclass(slots=True)
class PromptPrefill:
    """`job`'s prompt, prefilled into `slots[0]` (copied to the others once complete)."""

    job: Job
    slots: list[int]
    done: int = 0  # leading prompt tokens the first slot holds
    reused: int = 0  # of which loaded from the prefix store
    scores: list[PromptScores] = field(default_factory=list)

    @property
    def scoring(self) -> bool:
        return self.job.score_prompt is not None and self.job.on_prompt_scores is not None

    @property
    def complete(self) -> bool:
        return self.done >= len(self.job.prompt)

    def next_chunk(self, budget: int) -> PrefillChunk:
        """The next chunk: at least one new token, at most `budget` tokens (a scoring
        chunk's recomputed position may go one past it)."""
        prompt = self.job.prompt
        overlap = 1 if self.scoring and self.done else 0
        new = max(1, min(len(prompt) - self.done, budget - overlap))
        start = self.done - overlap
        return PrefillChunk(
            self.slots[0], prompt[start : self.done + new], start, every_position=self.scoring
        )

    def advance(self, chunk: PrefillChunk, logits: Any, sampler: Sampler) -> None:
        """Take a computed chunk's logits: score its tokens if the job scores its prompt."""
        self.done = chunk.start + len(chunk.tokens)
        if self.scoring and self.job.score_prompt is not None:
            scored = sampler.score_prompt(logits, chunk.tokens, self.job.score_prompt)
            if chunk.start:  # the recomputed position's entry belongs to the last chunk
                scored = PromptScores(scored.logprobs[1:], scored.top[1:])
            self.scores.append(scored)

    def prompt_scores(self) -> PromptScores:
        logprobs = tuple(entry for part in self.scores for entry in part.logprobs)
        top = tuple(entry for part in self.scores for entry in part.top)
        return PromptScores(logprobs, top)


def plan_chunks(
    prefills: Sequence[PromptPrefill], budget: int, *, padded: bool = False
) -> list[tuple[PromptPrefill, PrefillChunk]]:
    """One step's chunks: the oldest prompts first, until `budget` tokens are spent (the
    oldest always gets at least one token). `padded`: count what a padded batched pass
    computes, rows x its longest chunk, not the chunks' own tokens; a prompt that would
    widen the pass past `budget` is cut to fit, or waits for the next step."""
    planned: list[tuple[PromptPrefill, PrefillChunk]] = []
    left, width = budget, 0
    for prefill in prefills:
        if padded:
            room = budget // (len(planned) + 1)  # the widest row that keeps rows x width
            if room < max(width, 1):
                break
            chunk = prefill.next_chunk(room)
            width = max(width, len(chunk.tokens))
        else:
            if left <= 0:
                break
            chunk = prefill.next_chunk(left)
            left -= len(chunk.tokens)
        planned.append((prefill, chunk))
    return planned
