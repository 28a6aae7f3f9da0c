"""Chunked, batched prefill and the prefix store of the JAX runner: a prompt prefilled in
chunks (from start offsets, over several passes) gives the logits of one whole prefill and
of the torch runner's; a batch of chunks of different lengths from different slots gives
each chunk's logits alone; blocks saved from one slot and loaded into another decode as
the original does; new shapes inside a bucket compile nothing; a failed pass or store copy
empties every slot and the store, and the runner serves on."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import pytest

from providers.jax.runner import JaxRunner
from providers.jax.weights import JaxLlama
from providers.local.runner import CacheLost, PrefillChunk
from providers.local.settings import PrefixCacheSettings
from providers.torch.llama_weights import LlamaShape
from providers.torch.loading import LoadedModel
from providers.torch.runner import TorchRunner
from tests.providers.jax.conftest import MAX_CONTEXT, counted_compiles
from tests.providers.jax.test_forward import PROMPTS, assert_close, encode, reference_logits

CHUNK_TOKENS = 64  # a pass's budget: a 100-token prompt takes two passes


@pytest.fixture(scope="module")
def runner(jax_smollm2: tuple[JaxLlama, LlamaShape]) -> JaxRunner:
    model, shape = jax_smollm2
    return JaxRunner(
        model,
        shape,
        max_slots=4,
        max_context=MAX_CONTEXT,
        device=jax.devices("cpu")[0],
        prefill_chunk_tokens=CHUNK_TOKENS,
        prefix_cache=PrefixCacheSettings(max_tokens=128, block_tokens=16),  # 8 blocks
    )


@pytest.fixture(scope="module")
def story(smollm2: LoadedModel) -> list[int]:
    """A 100-token prompt."""
    tokens = encode(smollm2, " ".join(PROMPTS) * 3)[:100]
    assert len(tokens) == 100
    return tokens


def test_chunks_from_start_offsets_equal_one_whole_prefill_and_the_torch_runners(
    smollm2: LoadedModel, runner: JaxRunner, story: list[int]
) -> None:
    whole = runner.prefill(0, story, every_position=True)  # 100 tokens: two passes of 64
    assert runner.length(0) == 100
    assert_close(whole, reference_logits(smollm2.model, story))
    torch_runner = TorchRunner.from_loaded(smollm2, max_slots=1, max_context=MAX_CONTEXT)
    theirs = torch_runner.prefill(0, story).numpy()
    cuts = [(0, 30), (30, 37), (37, 100)]  # the last one longer than a pass: split again
    for begin, end in cuts:
        [last] = runner.prefill_chunks([PrefillChunk(1, story[begin:end], begin)])
        assert last.shape == (1, runner.vocab_size)
        assert_close(last, whole[end - 1 : end])
        assert runner.length(1) == end
    assert_close(last, theirs)
    [middle] = runner.prefill_chunks([PrefillChunk(1, story[30:90], 30, every_position=True)])
    assert_close(middle, whole[30:90])


def test_a_chunk_padded_past_the_cache_end_fills_the_last_positions(
    smollm2: LoadedModel, runner: JaxRunner, story: list[int]
) -> None:
    """A slot filled to its last position by a chunk of 56 tokens from 200: the chunk's
    padding (positions 256..263) is dropped, not clamped onto the last real position."""
    tokens = (story * 3)[:MAX_CONTEXT]
    runner.prefill(2, tokens[:200])
    [last] = runner.prefill_chunks([PrefillChunk(2, tokens[200:], 200)])
    assert runner.length(2) == MAX_CONTEXT
    assert_close(last, reference_logits(smollm2.model, tokens)[-1:])
    with pytest.raises(ValueError, match="full"):
        runner.decode([2], [42])


def test_a_batch_of_chunks_from_different_slots_equals_each_alone(
    runner: JaxRunner, story: list[int]
) -> None:
    def batch() -> list[PrefillChunk]:
        return [
            PrefillChunk(3, story[20:50], 20),
            PrefillChunk(1, story[60:70], 0),
            PrefillChunk(2, story[40:45], 40, every_position=True),
            PrefillChunk(0, story[:90], 0),  # past a pass's budget: its own passes
        ]

    def prepare() -> None:
        runner.prefill(3, story[:20])
        runner.prefill(2, story[:40])

    prepare()
    together = runner.prefill_chunks(batch())
    assert [runner.length(slot) for slot in (3, 1, 2, 0)] == [50, 10, 45, 90]
    assert [logits.shape[0] for logits in together] == [1, 1, 5, 1]
    for chunk, logits in zip(batch(), together, strict=True):
        prepare()
        [alone] = runner.prefill_chunks([chunk])
        assert_close(logits, alone)


def test_saved_blocks_loaded_into_another_slot_decode_as_the_original(
    smollm2: LoadedModel, runner: JaxRunner, story: list[int]
) -> None:
    original = runner.prefill(0, story[:40])
    runner.save_blocks(0, [(0, 3), (1, 5)])  # positions 0..31, two blocks (a bucket of 4)
    runner.prefill(0, story[50:90])  # the slot moves on: the store keeps its copy
    runner.load_blocks(2, [3, 5])
    assert runner.length(2) == 32
    [resumed] = runner.prefill_chunks([PrefillChunk(2, story[32:40], 32)])
    assert_close(resumed, original)
    runner.prefill(1, story[:40])
    logits = runner.decode([1, 2], [42, 42])
    assert_close(logits[1], logits[0])
    assert_close(logits[1], reference_logits(smollm2.model, [*story[:40], 42])[-1])
    runner.load_blocks(3, [5, 3, 5])  # any order, any repeats: the slot holds them in order
    assert runner.length(3) == 48
    with pytest.raises(ValueError, match="does not hold block 2"):
        runner.save_blocks(1, [(2, 0)])  # slot 1 holds 41 positions: block 2 ends at 48
    with pytest.raises(ValueError, match="out of range"):
        runner.load_blocks(1, [8])


def test_new_chunk_shapes_inside_a_bucket_compile_nothing(
    runner: JaxRunner, story: list[int]
) -> None:
    """Counted with jax's own compile events, on this thread."""

    def serve(lengths: tuple[int, int], starts: tuple[int, int], blocks: int) -> None:
        runner.prefill(0, story[: starts[0]] or story[:1])
        runner.prefill(1, story[: starts[1]] or story[:1])
        runner.prefill_chunks(
            [
                PrefillChunk(0, story[30 : 30 + lengths[0]], starts[0]),
                PrefillChunk(1, story[30 : 30 + lengths[1]], starts[1]),
            ]
        )
        runner.save_blocks(0, [(index, index) for index in range(blocks)])
        runner.load_blocks(2, list(range(blocks)))
        runner.decode([0, 1, 2], [5, 6, 7])

    serve((20, 10), (30, 10), 2)  # a pass of 2 x 32 tokens, window 64; 4-block copies
    with counted_compiles(this_thread_only=True) as compiles:
        serve((25, 10), (20, 3), 2)
        serve((30, 12), (20, 0), 3)
    assert compiles == []


def test_a_failed_pass_empties_every_slot_and_the_store_and_the_runner_serves_on(
    smollm2: LoadedModel, runner: JaxRunner, story: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    runner.prefill(0, story[:40])
    runner.save_blocks(0, [(0, 1)])

    def failing(*shape: Any) -> Any:
        def step(*arguments: Any) -> Any:
            donated = arguments[1]  # a prefill's cache, a save's store
            donated.keys.delete()
            donated.values.delete()
            raise RuntimeError("RESOURCE_EXHAUSTED: out of memory")

        return step

    calls = {
        "prefill": lambda: runner.prefill_chunks([PrefillChunk(3, story[20:30], 20)]),
        "save": lambda: runner.save_blocks(3, [(0, 2)]),
    }
    for step, call in calls.items():
        runner.prefill(3, story[:20])
        with monkeypatch.context() as patched:
            patched.setattr(runner.steps, step, failing)
            with pytest.raises(CacheLost, match="RESOURCE_EXHAUSTED"):
                call()
        assert [runner.length(slot) for slot in range(runner.max_slots)] == [0] * 4
        runner.load_blocks(1, [1])  # the store was emptied with the slots: zeros
        lost = runner.decode([1], [42])
        assert np.abs(lost - reference_logits(smollm2.model, [*story[:16], 42])[-1]).max() > 1
        runner.prefill(0, story[:40])
        runner.save_blocks(0, [(0, 1)])
    runner.prefill(1, story[:40])
    assert_close(runner.decode([1], [42]), reference_logits(smollm2.model, [*story[:40], 42])[-1:])
