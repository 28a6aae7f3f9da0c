"""What the engine runs: a job (one prompt and its candidates, with their sampling rows
and the sinks that receive their tokens). Its own module so that the engine and the
prefill bookkeeping (providers/local/prefilling.py) both name it without importing each
other."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from providers.local.runner import PromptScores, RowSampling, Sampled


class CandidateSink(Protocol):
    """Receives one candidate's tokens on the worker thread; must not block."""

    def on_token(self, sampled: Sampled) -> str | None:
        """Take a token; return a finish reason ("stop") to end the candidate now."""
        ...

    def on_finish(self, reason: str) -> None:
        """The candidate ended: "stop", "length", or "cancelled"."""
        ...


@dataclass(slots=True)
class Job:
    """One prompt and its candidates. `rows[i]` and `sinks[i]` belong to candidate i."""

    prompt: Sequence[int]
    rows: Sequence[RowSampling]
    sinks: Sequence[CandidateSink]
    max_new_tokens: int
    score_prompt: int | None = None  # top alternatives per prompt position, None: no scores
    on_prompt_scores: Callable[[PromptScores], None] | None = None
    on_error: Callable[[BaseException], None] | None = None
    background: bool = False  # waits behind every live job (a batch line)
    # Prompt tokens taken from the prefix store, not computed: set on the engine's thread
    # before the first token is delivered, so a sink's reader sees it (usage reports it).
    cached_tokens: int = 0
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()
