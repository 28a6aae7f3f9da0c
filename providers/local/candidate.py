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
    """New text for candidate `candidate`; `logprobs_end` = entries available so far."""

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
        self.logprob_sum = 0.0  # over the tokens that make up the text (best_of ranking)
        self.text_tokens = 0
        self.finish_reason: str | None = None
        self._prompt_entries = 0  # logprob entries of an echoed prompt come first
        self._text_base = 0  # ... and generated tokens' offsets start after its text

    @property
    def text(self) -> str:
        return self._stops.text

    @property
    def mean_logprob(self) -> float:
        return self.logprob_sum / self.text_tokens if self.text_tokens else float("-inf")

    def add_prompt_scores(self, prompt_ids: list[int], scores: PromptScores, text: str) -> None:
        if self.logprobs is not None:
            self.logprobs.add_prompt(prompt_ids, scores, text)
            self._prompt_entries = len(prompt_ids)
            self._text_base = len(text)

    def on_token(self, sampled: Sampled) -> str | None:
        self.generated += 1
        if sampled.token in self._eos:
            return "stop"
        self.logprob_sum += sampled.logprob
        self.text_tokens += 1
        if self.logprobs is not None:
            self.logprobs.add_sampled(sampled)
        sent = self._stops.push(self._detokenizer.feed(sampled.token))
        if self._stops.stopped:
            self._trim_logprobs()
            return "stop"
        if sent or self.logprobs is not None:
            self._emit(Delta(self.candidate, sent, self._logprobs_end()))
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

    def _trim_logprobs(self) -> None:
        """Drop the entries of tokens that begin at or after a stop string's start: their
        text is not in the answer."""
        if self.logprobs is None:
            return
        end = self._text_base + len(self._stops.text)
        entries = self.logprobs.entries
        while len(entries) > self._prompt_entries and entries[-1].text_offset >= end:
            entries.pop()
