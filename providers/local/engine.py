"""Continuous batching: one decode batch that requests join and leave between steps,
run on a worker thread so the event loop never waits on a forward pass.

Each step the worker (1) drops jobs and candidates whose request was cancelled, freeing
their slots at once; (2) admits waiting jobs while slots are free, loading the longest run
of their prompt's leading blocks that the prefix store holds into the job's first slot;
(3) runs one batched decode step over every active candidate and hands each sampled token
to the candidate's sink; (4) runs one batched prefill over the admitted prompts, oldest
first, within `prefill_chunk_tokens` (`providers.local.prefilling`): a long prompt takes
several steps, and the streams decoding beside it get a token every step meanwhile. While
no stream decodes there is no one to stall, so the step prefills within the larger
`cold_prefill_tokens` instead: a burst of short prompts arriving at an idle engine goes in
one batched pass, and every one of them has its first token after one step, not after as
many steps as their tokens make chunks. A
completed prompt's whole blocks go into the prefix store, its first slot is copied to the
slots of its other candidates (n, best_of), so a prompt is never computed twice, and each
candidate samples its first token. Candidates finish on a sink's word (stop string,
end-of-sequence), on `max_new_tokens`, or when their slot's context is full; a finished
candidate's blocks (prompt and answer: what a conversation's next turn starts with) go
into the prefix store too.

Waiting jobs are admitted in order of arrival, except that background jobs (batch lines)
queue behind every live one: a background job starts only while no live job waits, so
batches yield to interactive traffic without ever preempting a job already decoding.
"""

from __future__ import annotations

import heapq
import threading
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from providers.local.job import CandidateSink, Job
from providers.local.prefilling import PromptPrefill, plan_chunks
from providers.local.prefix_cache import PrefixIndex
from providers.local.runner import (
    CacheLost,
    ModelRunner,
    RowSampling,
    Sampled,
    Sampler,
)

log = structlog.get_logger("turnout.providers.local.engine")


@dataclass(slots=True)
class _Candidate:
    job: Job
    index: int
    slot: int
    next_input: int
    produced: int = 1  # the first token came from the prefill
    generated_from: int = 0  # where this job's tokens begin in `row.generated`

    @property
    def row(self) -> RowSampling:
        return self.job.rows[self.index]

    @property
    def sink(self) -> CandidateSink:
        return self.job.sinks[self.index]


DEFAULT_PREFILL_CHUNK_TOKENS = 256
# The prefill budget of a step with no stream decoding, in padded tokens (rows x the
# longest chunk: what a padded batched pass computes). It bounds that pass's transient
# memory: attention scores are rows x length x heads x the positions attended, at most
# 1,024 x 9 x 2,048 float32 = 72 MiB for SmolLM2-135M at the default context, against
# the 1.4 GiB a full KV cache holds; and it bounds how long a prompt arriving meanwhile
# waits for the engine, to one pass of 4x the decode-time budget. Sixteen chat prompts of
# ~40 tokens (640 padded) fit in one pass.
DEFAULT_COLD_PREFILL_TOKENS = 1024


class Engine:
    def __init__(
        self,
        runner: ModelRunner,
        sampler: Sampler,
        name: str = "local",
        *,
        prefill_chunk_tokens: int = DEFAULT_PREFILL_CHUNK_TOKENS,
        cold_prefill_tokens: int = DEFAULT_COLD_PREFILL_TOKENS,
    ) -> None:
        if prefill_chunk_tokens < 1:
            raise ValueError(f"prefill_chunk_tokens must be at least 1, got {prefill_chunk_tokens}")
        self._runner = runner
        self._sampler = sampler
        self._name = name
        self._chunk_tokens = prefill_chunk_tokens
        # Never below the decode-time budget (a test passes it equal, to keep chunking).
        self._cold_tokens = max(cold_prefill_tokens, prefill_chunk_tokens)
        # Which prefixes the runner's store holds; a router may ask `cached_tokens`.
        self.prefix_cache = PrefixIndex(runner.block_tokens, runner.store_blocks)
        self.steps = 0  # engine steps run (tests count in steps, never in seconds)
        self._waiting: deque[Job] = deque()  # live jobs, in order of arrival
        self._background: deque[Job] = deque()  # admitted only while no live job waits
        self._prefilling: list[PromptPrefill] = []  # admitted, oldest first
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
        """Candidates holding slots: decoding, or waiting for their prompt's prefill."""
        return len(self._active) + sum(len(p.slots) for p in self._prefilling)

    @property
    def slots(self) -> int:
        """The KV-cache slots there are (each decoding candidate holds one)."""
        return self._runner.max_slots

    def submit(self, job: Job) -> None:
        self.submit_all([job])

    def submit_all(self, jobs: Sequence[Job]) -> None:
        """Queue `jobs` at once: the engine's next step sees all of them (a request's
        prompts are admitted, and prefilled cold, together), or none if one is refused."""
        for job in jobs:
            if len(job.rows) > self._runner.max_slots:
                raise ValueError(
                    f"{len(job.rows)} candidates need more slots than this model has "
                    f"({self._runner.max_slots})"
                )
        with self._wake:
            for job in jobs:
                (self._background if job.background else self._waiting).append(job)
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout=30)

    def _busy(self) -> bool:
        return bool(self._active or self._prefilling or self.queue_depth)

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closing and not self._busy():
                    self._wake.wait()
                if self._closing:
                    break
            try:
                self._drop_cancelled()
                self._admit()
                if self._active:
                    self._decode()
                if self._prefilling:
                    self._prefill()
            except CacheLost as exc:  # every slot's cache and the prefix store went with it
                log.error("engine_cache_lost", engine=self._name, exc_info=exc)
                self.prefix_cache.clear()
                self._fail_holding(exc)
            except Exception as exc:  # a failed forward pass fails the requests, not the thread
                log.error("engine_step_failed", engine=self._name, exc_info=exc)
                self._fail_all(exc)
            self.steps += 1
        self._fail_all(RuntimeError("the engine is shutting down"))

    def _drop_cancelled(self) -> None:
        keep: list[_Candidate] = []
        for candidate in self._active:
            if candidate.job.cancelled.is_set():
                self._finish(candidate, "cancelled")
            else:
                keep.append(candidate)
        self._active = keep
        for prefill in [p for p in self._prefilling if p.job.cancelled.is_set()]:
            self._prefilling.remove(prefill)
            self._free_slots(prefill.slots)
            for sink in prefill.job.sinks:
                sink.on_finish("cancelled")
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
            prefill = PromptPrefill(job, slots)
            self._prefilling.append(prefill)
            try:
                self._load_prefix(prefill)
            except CacheLost:
                raise
            except Exception as exc:
                self._abort(prefill, exc)

    def _load_prefix(self, prefill: PromptPrefill) -> None:
        """Load the longest run of the prompt's leading blocks the store holds, and take
        all but the last token from them: the last position's logits must be computed,
        so a prompt held whole (a length that is a whole number of blocks) recomputes
        that one token over its loaded copy, not its whole last block."""
        prompt = prefill.job.prompt
        if prefill.scoring or not self.prefix_cache.capacity:
            return
        blocks = self.prefix_cache.match(prompt, len(prompt))
        if blocks:
            self._runner.load_blocks(prefill.slots[0], blocks)
            held = len(blocks) * self.prefix_cache.block_tokens
            prefill.done = prefill.reused = min(held, len(prompt) - 1)
            prefill.job.cached_tokens = prefill.reused

    def _prefill(self) -> None:
        # Live prompts before background ones (batch lines), each kind oldest first.
        queue = sorted(self._prefilling, key=lambda prefill: prefill.job.background)
        if self._active:  # streams decode beside this prefill: keep their steps short
            planned = plan_chunks(queue, self._chunk_tokens)
        else:  # no one to stall: as much as one bounded padded pass takes
            planned = plan_chunks(queue, self._cold_tokens, padded=True)
        try:
            logits = self._runner.prefill_chunks([chunk for _, chunk in planned])
        except CacheLost:
            raise
        except Exception as exc:
            for prefill, _ in planned:
                self._abort(prefill, exc)
            return
        for (prefill, chunk), chunk_logits in zip(planned, logits, strict=True):
            try:
                prefill.advance(chunk, chunk_logits, self._sampler)
                if prefill.complete:
                    # Out of the prefilling list as its candidates join the active one, so
                    # that `in_flight` never counts a slot twice.
                    self._prefilling.remove(prefill)
                    self._start(prefill, chunk_logits)
            except CacheLost:
                if prefill not in self._prefilling:  # its slots fail with all the others
                    self._prefilling.append(prefill)
                raise
            except Exception as exc:
                self._abort(prefill, exc)

    def _start(self, prefill: PromptPrefill, logits: Any) -> None:
        job, slots = prefill.job, prefill.slots
        if prefill.scoring and job.on_prompt_scores is not None:
            job.on_prompt_scores(prefill.prompt_scores())
        self._store(slots[0], job.prompt)
        if job.max_new_tokens <= 0:
            self._free_slots(slots)
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
            candidate = _Candidate(job, index, slot, outcome.token, 1, len(row.generated))
            if self._deliver(candidate, outcome, prompt_length + 1):
                self._active.append(candidate)

    def _store(self, slot: int, tokens: Sequence[int]) -> None:
        """Copy the whole blocks of `tokens` (what `slot` holds) that the store lacks. A
        copy that fails costs reuse only: its blocks are forgotten, the job goes on."""
        claimed = self.prefix_cache.claim(tokens, len(tokens))
        if not claimed:
            return
        try:
            self._runner.save_blocks(slot, claimed)
        except Exception as exc:
            self.prefix_cache.forget([block for _, block in claimed])
            if isinstance(exc, CacheLost):
                raise
            log.warning("prefix_store_failed", engine=self._name, exc_info=exc)

    def _decode(self) -> None:
        batch = self._active
        try:
            logits = self._runner.decode([c.slot for c in batch], [c.next_input for c in batch])
        except CacheLost:
            raise
        except Exception as exc:  # the prompts still prefilling keep their slots
            jobs = {id(c.job): c.job for c in batch}
            self._free_slots([c.slot for c in batch])
            self._active = []
            for job in jobs.values():
                self._fail(job, exc)
            return
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
        if reason != "cancelled":
            self._keep_sequence(candidate)
        self._free_slots([candidate.slot])
        candidate.sink.on_finish(reason)

    def _keep_sequence(self, candidate: _Candidate) -> None:
        """Store the finished candidate's blocks: its slot holds the prompt and every
        generated token but the last (sampled, never fed back)."""
        start = candidate.generated_from
        fed = candidate.row.generated[start : start + candidate.produced - 1]
        self._store(candidate.slot, [*candidate.job.prompt, *fed])

    def _free_slots(self, slots: Iterable[int]) -> None:
        for slot in slots:
            self._runner.free(slot)
            heapq.heappush(self._free, slot)

    def _fail(self, job: Job, exc: BaseException) -> None:
        if job.on_error is not None:
            job.on_error(exc)

    def _abort(self, prefill: PromptPrefill, exc: BaseException) -> None:
        """Fail a job that failed before or as it started: candidates started before the
        failure stop too, and a slot one of them already gave back is not freed twice."""
        job = prefill.job
        if prefill in self._prefilling:
            self._prefilling.remove(prefill)
        self._active = [c for c in self._active if c.job is not job]
        self._free_slots([slot for slot in prefill.slots if slot not in self._free])
        self._fail(job, exc)

    def _fail_holding(self, exc: BaseException) -> None:
        """Fail every job holding slots (decoding or prefilling), and free the slots."""
        jobs = {id(c.job): c.job for c in self._active}
        jobs.update((id(p.job), p.job) for p in self._prefilling)
        held = {c.slot for c in self._active} | {s for p in self._prefilling for s in p.slots}
        self._free_slots(sorted(held - set(self._free)))
        self._active, self._prefilling = [], []
        for job in jobs.values():
            self._fail(job, exc)

    def _fail_all(self, exc: BaseException) -> None:
        """Fail every job, holding slots or waiting for them."""
        self._fail_holding(exc)
        with self._wake:
            waiting = [*self._waiting, *self._background]
            self._waiting.clear()
            self._background.clear()
        for job in waiting:
            self._fail(job, exc)
