"""`TorchRunner.prefill_chunks`, the prefix store and the growing KV cache on SmolLM2:
several slots' chunks in one padded forward give what whole prefills give, padding never
lands in a slot, blocks saved and loaded back continue exactly, and the cache holds only
what the longest live sequence needs."""

from __future__ import annotations

import pytest
import torch

from providers.local.runner import PrefillChunk
from providers.torch.kv_cache import FIRST_CAPACITY, SlotKVCache
from providers.torch.loading import LoadedModel
from providers.torch.runner import TorchRunner

BLOCK = 8
A = [(17 * i) % 3000 + 50 for i in range(40)]
B = [(29 * i) % 3000 + 60 for i in range(19)]


@pytest.fixture(scope="module")
def runner(smollm2: LoadedModel) -> TorchRunner:
    return TorchRunner.from_loaded(
        smollm2, max_slots=4, max_context=512, prefix_tokens=8 * BLOCK, block_tokens=BLOCK
    )


@pytest.fixture(scope="module")
def whole(runner: TorchRunner) -> tuple[torch.Tensor, torch.Tensor]:
    """Every position's logits of A and B, each prefilled whole."""
    a = runner.prefill(0, A, every_position=True)
    b = runner.prefill(1, B, every_position=True)
    return a, b


def close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    torch.testing.assert_close(ours, theirs, atol=1e-3, rtol=1e-4)


def test_chunks_of_several_slots_in_one_pass_match_whole_prefills(
    runner: TorchRunner, whole: tuple[torch.Tensor, torch.Tensor]
) -> None:
    a, b = whole
    before = runner.counts.prefills, runner.counts.prefill_tokens
    first = runner.prefill_chunks([PrefillChunk(2, A[:13]), PrefillChunk(3, B[:7], 0, True)])
    close(first[0], a[12:13])
    close(first[1], b[:7])
    second = runner.prefill_chunks(
        [PrefillChunk(2, A[13:30], 13, every_position=True), PrefillChunk(3, B[7:], 7)]
    )
    close(second[0], a[13:30])
    close(second[1], b[-1:])
    (last,) = runner.prefill_chunks([PrefillChunk(2, A[30:], 30)])
    close(last, a[-1:])
    assert (runner.length(2), runner.length(3)) == (len(A), len(B))
    assert runner.counts.prefills - before[0] == 3
    assert runner.counts.prefill_tokens - before[1] == len(A) + len(B)
    # The chunked slots decode exactly as the whole ones.
    close(runner.decode([2, 3], [5, 6]), runner.decode([0, 1], [5, 6]))


def test_padding_is_never_written_to_a_slot(runner: TorchRunner) -> None:
    runner.prefill(3, B)  # stale contents past what the short chunk writes
    cache = runner.forward.cache
    stale = cache.keys[:, 3, :, 10 : len(B)].clone()
    runner.prefill_chunks([PrefillChunk(2, A[:30]), PrefillChunk(3, B[:10])])
    assert torch.equal(cache.keys[:, 3, :, 10 : len(B)], stale)
    assert runner.length(3) == 10


def test_saved_blocks_load_into_another_slot_and_continue_exactly(
    runner: TorchRunner, whole: tuple[torch.Tensor, torch.Tensor]
) -> None:
    a, _ = whole
    runner.prefill(2, A)
    runner.save_blocks(2, [(0, 5), (1, 2), (2, 7)])
    runner.load_blocks(1, [5, 2, 7])
    assert runner.length(1) == 3 * BLOCK
    (logits,) = runner.prefill_chunks([PrefillChunk(1, A[3 * BLOCK :], 3 * BLOCK, True)])
    close(logits, a[3 * BLOCK :])
    runner.load_blocks(1, [5])  # a shorter prefix replaces what the slot held
    assert runner.length(1) == BLOCK
    with pytest.raises(ValueError, match="beyond what the slot holds"):
        runner.save_blocks(1, [(1, 0)])


def test_the_cache_grows_with_the_longest_sequence_and_shrinks_when_idle() -> None:
    cache = SlotKVCache(
        layers=2, slots=3, kv_heads=1, context=1000, head_dim=2, dtype=torch.float32,
        device=torch.device("cpu"), block_tokens=BLOCK,
    )  # fmt: skip
    assert cache.capacity == FIRST_CAPACITY
    held = torch.arange(2 * 3 * 100 * 2, dtype=torch.float32).view(2, 3, 1, 100, 2)
    with torch.inference_mode():
        cache.keys[:, :, :, :100] = held
    cache.lengths[:] = [100, 40, 0]
    cache.ensure(300)
    assert cache.capacity == 2 * FIRST_CAPACITY  # doubled, in whole blocks
    assert torch.equal(cache.keys[:, :, :, :100], held)  # what the slots held is kept
    assert not cache.values.any()
    cache.ensure(999)
    assert cache.capacity == 1000  # never past max_context
    cache.free(0)
    cache.free(1)
    assert cache.capacity == 1000  # idle, but this spell needed as much
    cache.lengths[2] = 300
    cache.ensure(300)
    cache.free(2)
    assert cache.capacity == 2 * FIRST_CAPACITY  # the next spell needed under half
    cache.lengths[2] = 10
    cache.free(2)
    assert cache.capacity == FIRST_CAPACITY
    assert not cache.keys.any()


def test_decode_after_the_cache_grew_matches(smollm2: LoadedModel) -> None:
    runner = TorchRunner.from_loaded(smollm2, max_slots=2, max_context=FIRST_CAPACITY + 8)
    prompt = [(13 * i) % 3000 + 40 for i in range(FIRST_CAPACITY - 1)]
    runner.prefill(0, prompt)
    runner.prefill(1, prompt)
    expected = runner.decode([0], [7])
    assert runner.forward.cache.capacity == FIRST_CAPACITY
    grown = runner.decode([1, 0], [7, 9])  # slot 0 needs position FIRST_CAPACITY
    assert runner.forward.cache.capacity == FIRST_CAPACITY + 8
    close(grown[0], expected[0])


def test_refuses_chunks_no_slot_can_take(runner: TorchRunner) -> None:
    runner.prefill(0, A[:10])
    with pytest.raises(ValueError, match="distinct"):
        runner.prefill_chunks([PrefillChunk(0, [1], 10), PrefillChunk(0, [2], 11)])
    with pytest.raises(ValueError, match="start within"):
        runner.prefill_chunks([PrefillChunk(0, [1], 11)])
    with pytest.raises(ValueError, match="start within"):
        runner.prefill_chunks([PrefillChunk(0, [], 10)])
    with pytest.raises(ValueError, match="past 512"):
        runner.prefill_chunks([PrefillChunk(0, [1] * 503, 10)])
    assert runner.length(0) == 10
    assert (runner.block_tokens, runner.store_blocks) == (BLOCK, 8)
