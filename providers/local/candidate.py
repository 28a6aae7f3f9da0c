"""One candidate's output, assembled on the engine thread as tokens arrive: detokenized
incrementally, cut at stop strings, logprobs collected, and handed to the event loop as
events (`Delta`, `Finished`) through a thread-safe callback."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from providers.local.logprobs import LogprobsAccumulator
from providers.local.runner import PromptScores, Sampled
from providers.local.text import StopFilter, StopMatcher
from providers.local.tokenizer import TokenizerAdapter


@dataclass(frozen=True, slots=True)
class Delta:
    """New text for candidate `candidate`; `logprobs_end` = entries whose text has been
    sent (a token held back as the possible start of a stop string waits with its text)."""

    candidate: int
    text: str
    logprobs_end: int


@dataclass(frozen=True, slots=True)
class Finished:
    candidate: int
    text: str  # the last piece of text (held back until now)
    reason: str  # stop | length | cancelled
    logprobs_end: int


@dataclass(frozen=True, slots=True)
class Failed:
    error: BaseException


Event = Delta | Finished | Failed


class CandidateOutput:
    """A `CandidateSink` (see providers.local.engine) for one candidate of one request."""

    def __init__(
        self,
        candidate: int,
        adapter: TokenizerAdapter,
        prompt_ids: list[int],
        stops: tuple[str, ...],
        logprobs: bool,
        emit: Callable[[Event], None],
    ) -> None:
        self.candidate = candidate
        self._emit = emit
        self._eos = adapter.eos_ids
        self._detokenizer = adapter.detokenizer(prompt_ids)
        self._stops = StopFilter(StopMatcher(stops))
        self.logprobs = LogprobsAccumulator(adapter, prefix_ids=prompt_ids) if logprobs else None
        self.generated = 0  # every sampled token, end-of-sequence included (usage)
        # (offset into the generated text, logprob) of each token that makes up the text:
        # best_of ranks candidates by their mean, over exactly the tokens returned.
        self._scores: list[tuple[int, float]] = []
        self._produced_chars = 0  # detokenized text so far, before any stop cut
        self.finish_reason: str | None = None
        self._prompt_entries = 0  # logprob entries of an echoed prompt come first
        self._text_base = 0  # ... and generated tokens' offsets start after its text
        self._sent_chars = 0  # generated text handed out in `Delta`s so far
        self._sent_entries = 0  # logprob entries handed out in `Delta`s so far

    @property
    def text(self) -> str:
        return self._stops.text

    @property
    def mean_logprob(self) -> float:
        if not self._scores:
            return float("-inf")
        return sum(score for _, score in self._scores) / len(self._scores)

    def add_prompt_scores(self, prompt_ids: list[int], scores: PromptScores, text: str) -> None:
        if self.logprobs is not None:
            self.logprobs.add_prompt(prompt_ids, scores, text)
            self._prompt_entries = len(prompt_ids)
            self._text_base = len(text)

    def on_token(self, sampled: Sampled) -> str | None:
        self.generated += 1
        if sampled.token in self._eos:
            return "stop"
        self._scores.append((self._produced_chars, sampled.logprob))
        if self.logprobs is not None:
            self.logprobs.add_sampled(sampled)
        delta = self._detokenizer.feed(sampled.token)
        self._produced_chars += len(delta)
        sent = self._stops.push(delta)
        if self._stops.stopped:
            self._trim_logprobs()
            return "stop"
        self._sent_chars += len(sent)
        entries = self._sent_logprobs_end()
        if sent or entries > self._sent_entries:
            self._sent_entries = entries
            self._emit(Delta(self.candidate, sent, entries))
        return None

    def on_finish(self, reason: str) -> None:
        tail = ""
        if reason != "cancelled" and not self._stops.stopped:
            tail = self._stops.push(self._detokenizer.flush())
            if not self._stops.stopped:
                tail += self._stops.finish()
            else:
                self._trim_logprobs()
        self.finish_reason = reason
        self._emit(Finished(self.candidate, tail, reason, self._logprobs_end()))

    def _logprobs_end(self) -> int:
        return len(self.logprobs) if self.logprobs is not None else 0

    def _sent_logprobs_end(self) -> int:
        """How many entries belong to text already sent: a token whose text is held back
        may yet turn out to start a stop string, and then it is not part of the answer."""
        if self.logprobs is None:
            return 0
        sent_to = self._text_base + self._sent_chars
        entries = self.logprobs.entries
        end = len(entries)
        while end > max(self._sent_entries, self._prompt_entries) and (
            entries[end - 1].text_offset >= sent_to
        ):
            end -= 1
        return end

    def _trim_logprobs(self) -> None:
        """Drop the scores and logprob entries of tokens that begin at or after a stop
        string's start: their text is not in the answer."""
        kept = len(self._stops.text)
        while self._scores and self._scores[-1][0] >= kept:
            self._scores.pop()
        if self.logprobs is None:
            return
        end = self._text_base + len(self._stops.text)
        entries = self.logprobs.entries
        while len(entries) > self._prompt_entries and entries[-1].text_offset >= end:
            entries.pop()
