"""Continuous batching: one decode batch that requests join and leave between steps,
run on a worker thread so the event loop never waits on a forward pass.

Each step the worker (1) drops candidates whose request was cancelled, freeing their slots
at once; (2) admits waiting jobs while slots are free — one prefill per job, copied to the
slots of its other candidates (n, best_of), so a prompt is never computed twice; (3) runs
one batched decode step over every active candidate and hands each sampled token to the
candidate's sink. Candidates finish on a sink's word (stop string, end-of-sequence), on
`max_new_tokens`, or when their slot's context is full.

Waiting jobs are admitted in order of arrival, except that background jobs (batch lines)
queue behind every live one: a background job starts only while no live job waits, so
batches yield to interactive traffic without ever preempting a job already decoding.
"""

from __future__ import annotations

import heapq
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from providers.local.runner import (
    CacheLost,
    ModelRunner,
    PromptScores,
    RowSampling,
    Sampled,
    Sampler,
)

log = structlog.get_logger("turnout.providers.local.engine")


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
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass(slots=True)
class _Candidate:
    job: Job
    index: int
    slot: int
    next_input: int
    produced: int = 1  # the first token came from the prefill

    @property
    def row(self) -> RowSampling:
        return self.job.rows[self.index]

    @property
    def sink(self) -> CandidateSink:
        return self.job.sinks[self.index]


class Engine:
    def __init__(self, runner: ModelRunner, sampler: Sampler, name: str = "local") -> None:
        self._runner = runner
        self._sampler = sampler
        self._name = name
        self._waiting: deque[Job] = deque()  # live jobs, in order of arrival
        self._background: deque[Job] = deque()  # admitted only while no live job waits
        self._active: list[_Candidate] = []
        # A min-heap: the lowest free slots first, so a batch's slots tend to be contiguous
        # and the runner can take a view of its cache rows instead of gathering them.
        self._free = list(range(runner.max_slots))
        self._wake = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(
            target=self._run, name=f"turnout-engine-{name}", daemon=True
        )
        self._thread.start()

    @property
    def running(self) -> bool:
        """The decode thread is alive and not shutting down (a health check reads it)."""
        return not self._closing and self._thread.is_alive()

    @property
    def queue_depth(self) -> int:
        """Jobs waiting for slots (for least-busy routing)."""
        return len(self._waiting) + len(self._background)

    @property
    def in_flight(self) -> int:
        """Candidates currently decoding."""
        return len(self._active)

    @property
    def slots(self) -> int:
        """The KV-cache slots there are (each decoding candidate holds one)."""
        return self._runner.max_slots

    def submit(self, job: Job) -> None:
        if len(job.rows) > self._runner.max_slots:
            raise ValueError(
                f"{len(job.rows)} candidates need more slots than this model has "
                f"({self._runner.max_slots})"
            )
        with self._wake:
            (self._background if job.background else self._waiting).append(job)
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closing and not self._active and not self.queue_depth:
                    self._wake.wait()
                if self._closing:
                    break
            try:
                self._drop_cancelled()
                self._admit()
                if self._active:
                    self._step()
            except Exception as exc:  # a failed forward pass fails the requests, not the thread
                log.error("engine_step_failed", engine=self._name, exc_info=exc)
                self._fail_all(exc)
        self._fail_all(RuntimeError("the engine is shutting down"))

    def _drop_cancelled(self) -> None:
        keep: list[_Candidate] = []
        for candidate in self._active:
            if candidate.job.cancelled.is_set():
                self._finish(candidate, "cancelled")
            else:
                keep.append(candidate)
        self._active = keep
        with self._wake:
            for queue in (self._waiting, self._background):
                for job in [j for j in queue if j.cancelled.is_set()]:
                    queue.remove(job)
                    for sink in job.sinks:
                        sink.on_finish("cancelled")

    def _admit(self) -> None:
        while True:
            with self._wake:
                # The head of the live queue, else of the background one; a head that does
                # not fit waits for slots, and nothing behind it overtakes it.
                queue = self._waiting or self._background
                if not queue or len(queue[0].rows) > len(self._free):
                    return
                job = queue.popleft()
                slots = [heapq.heappop(self._free) for _ in job.rows]
            try:
                self._start(job, slots)
            except Exception as exc:
                # Candidates started before the failure stop too, and a slot that one of
                # them already gave back (finished at its first token) is not freed twice.
                self._active = [c for c in self._active if c.job is not job]
                self._release(slot for slot in slots if slot not in self._free)
                self._fail(job, exc)
                if isinstance(exc, CacheLost):  # the other sequences' caches went with it
                    self._fail_active(exc)

    def _start(self, job: Job, slots: list[int]) -> None:
        scoring = job.score_prompt is not None and job.on_prompt_scores is not None
        logits = self._runner.prefill(slots[0], job.prompt, every_position=scoring)
        if job.score_prompt is not None and job.on_prompt_scores is not None:
            job.on_prompt_scores(self._sampler.score_prompt(logits, job.prompt, job.score_prompt))
        if job.max_new_tokens <= 0:
            self._release(slots)
            for sink in job.sinks:
                sink.on_finish("length")
            return
        for slot in slots[1:]:
            self._runner.copy_slot(slots[0], slot)
        last = logits[-1:]  # every candidate's first token comes from the shared prefill
        prompt_length = len(job.prompt)
        for index, (slot, row) in enumerate(zip(slots, job.rows, strict=True)):
            if row.generator is None:
                row.generator = self._sampler.new_generator(row.seed)
            outcome = self._sampler.sample(last, [row])[0]
            candidate = _Candidate(job, index, slot, outcome.token)
            if self._deliver(candidate, outcome, prompt_length + 1):
                self._active.append(candidate)

    def _step(self) -> None:
        batch = self._active
        logits = self._runner.decode([c.slot for c in batch], [c.next_input for c in batch])
        sampled = self._sampler.sample(logits, [c.row for c in batch])
        keep: list[_Candidate] = []
        for candidate, outcome in zip(batch, sampled, strict=True):
            candidate.produced += 1
            candidate.next_input = outcome.token
            length = len(candidate.job.prompt) + candidate.produced
            if self._deliver(candidate, outcome, length):
                keep.append(candidate)
        self._active = keep

    def _deliver(self, candidate: _Candidate, outcome: Sampled, length: int) -> bool:
        """Hand a token to its sink; True while the candidate goes on."""
        candidate.row.generated.append(outcome.token)
        reason = candidate.sink.on_token(outcome)
        if reason is None and candidate.produced >= candidate.job.max_new_tokens:
            reason = "length"
        if reason is None and length >= self._runner.max_context:
            reason = "length"
        if reason is None:
            return True
        self._finish(candidate, reason)
        return False

    def _finish(self, candidate: _Candidate, reason: str) -> None:
        self._runner.free(candidate.slot)
        self._release([candidate.slot])
        candidate.sink.on_finish(reason)

    def _release(self, slots: Iterable[int]) -> None:
        for slot in slots:
            heapq.heappush(self._free, slot)

    def _fail(self, job: Job, exc: BaseException) -> None:
        if job.on_error is not None:
            job.on_error(exc)

    def _fail_active(self, exc: BaseException) -> None:
        """Fail every job with a candidate decoding, and free their slots."""
        failed = {id(c.job): c.job for c in self._active}
        for candidate in self._active:
            self._runner.free(candidate.slot)
            self._release([candidate.slot])
        self._active = []
        for job in failed.values():
            self._fail(job, exc)

    def _fail_all(self, exc: BaseException) -> None:
        self._fail_active(exc)
        with self._wake:
            waiting = [*self._waiting, *self._background]
            self._waiting.clear()
            self._background.clear()
        for job in waiting:
            self._fail(job, exc)
