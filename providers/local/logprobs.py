"""`LogprobsAccumulator`: per-token logprobs of one choice, rendered in either wire format.

The engine adds one entry per token (the sampler's `Sampled`, or a prompt's `PromptScores`
under `echo`); the accumulator works out each token's character offset into the returned
text and renders the completions format (four parallel arrays, the sampled token always
among `top_logprobs`) or the chat format (`content` entries with `bytes`). For streaming,
`start`/`end` select the entries of one chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from providers.local.runner import PromptScores, Sampled
from providers.local.text import IncrementalDetokenizer
from providers.local.tokenizer import TokenizerAdapter

# JSON has no -inf; OpenAI-compatible servers (vLLM) clamp to this.
LOGPROB_FLOOR = -9999.0


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One position: the token, its logprob (None for the first echoed prompt token), the
    alternatives as (token id, logprob), best first, and its offset into the text."""

    token: int
    logprob: float | None
    top: tuple[tuple[int, float], ...] | None
    text_offset: int


def _finite(logprob: float) -> float:
    return logprob if logprob > LOGPROB_FLOOR else LOGPROB_FLOOR


class LogprobsAccumulator:
    """Collects the logprobs of one choice's tokens in order.

    Offsets count the characters of the returned text completed before each token: a
    token holding only the first bytes of a character points where that character starts.
    """

    __slots__ = ("_adapter", "_base", "_detokenizer", "_emitted", "_skip_special", "entries")

    def __init__(
        self,
        adapter: TokenizerAdapter,
        *,
        prefix_ids: Sequence[int] = (),
        skip_special_tokens: bool = True,
    ) -> None:
        self._adapter = adapter
        self._skip_special = skip_special_tokens
        self._detokenizer = adapter.detokenizer(prefix_ids, skip_special_tokens=skip_special_tokens)
        self._base = 0
        self._emitted = 0
        self.entries: list[TokenLogprob] = []

    def __len__(self) -> int:
        return len(self.entries)

    def add(
        self, token: int, logprob: float | None, top: Sequence[tuple[int, float]] | None = ()
    ) -> None:
        """Add the next generated token."""
        offset = self._base + self._emitted
        self._emitted += len(self._detokenizer.feed(token))
        alternatives = None if top is None else tuple(top)
        self.entries.append(TokenLogprob(token, logprob, alternatives, offset))

    def add_sampled(self, sampled: Sampled) -> None:
        self.add(sampled.token, sampled.logprob, sampled.top)

    def add_prompt(self, tokens: Sequence[int], scores: PromptScores, text: str) -> None:
        """Add an echoed prompt's tokens (before any generated one). `text` is the prompt as
        the response shows it; generated tokens' offsets continue after it."""
        if self.entries:
            raise ValueError("prompt logprobs must come before generated ones")
        # A text prompt may spell special tokens out, so they count as text here.
        detokenizer = IncrementalDetokenizer(self._adapter.tokenizer, skip_special_tokens=False)
        emitted = 0
        for token, logprob, top in zip(tokens, scores.logprobs, scores.top, strict=True):
            self.entries.append(TokenLogprob(token, logprob, top, emitted))
            emitted += len(detokenizer.feed(token))
        self._detokenizer = self._adapter.detokenizer(
            tokens, skip_special_tokens=self._skip_special
        )
        self._base = len(text)
        self._emitted = 0

    def completion_logprobs(self, start: int = 0, end: int | None = None) -> dict[str, Any]:
        """The completions `logprobs` object for entries[start:end]."""
        entries = self.entries[start:end]
        adapter = self._adapter
        top_logprobs: list[dict[str, float] | None] = []
        for entry in entries:
            if entry.top is None or entry.logprob is None:
                top_logprobs.append(None)
                continue
            shown: dict[str, float] = {}
            for token, logprob in entry.top:
                shown.setdefault(adapter.token_text(token), _finite(logprob))
            # The sampled token is always listed, even when it is not among the top k.
            shown.setdefault(adapter.token_text(entry.token), _finite(entry.logprob))
            top_logprobs.append(shown)
        return {
            "tokens": [adapter.token_text(entry.token) for entry in entries],
            "token_logprobs": [
                None if entry.logprob is None else _finite(entry.logprob) for entry in entries
            ],
            "top_logprobs": top_logprobs,
            "text_offset": [entry.text_offset for entry in entries],
        }

    def chat_logprobs(self, start: int = 0, end: int | None = None) -> dict[str, Any]:
        """The chat `logprobs` object (`content` entries) for entries[start:end]."""
        content = [
            {
                **self._chat_token(entry.token, entry.logprob),
                "top_logprobs": [
                    self._chat_token(token, logprob) for token, logprob in entry.top or ()
                ],
            }
            for entry in self.entries[start:end]
        ]
        return {"content": content, "refusal": None}

    def _chat_token(self, token: int, logprob: float | None) -> dict[str, Any]:
        return {
            "token": self._adapter.token_text(token),
            "logprob": _finite(LOGPROB_FLOOR if logprob is None else logprob),
            "bytes": self._adapter.token_bytes(token),
        }
