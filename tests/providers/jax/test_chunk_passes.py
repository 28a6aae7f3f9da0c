"""`plan_passes` under the engine's cold budget: a burst of prompts handed to the JAX runner
in one call (up to 1,024 padded tokens, no stream decoding) is laid out in passes of the
shapes `compile_ahead` compiled, each within one pass's token budget, so prefilling a
cold burst in one engine step compiles nothing new."""

from __future__ import annotations

from providers.jax.buckets import Buckets
from providers.jax.chunks import plan_passes
from providers.local.engine import DEFAULT_COLD_PREFILL_TOKENS
from providers.local.job import Job
from providers.local.prefilling import PromptPrefill, plan_chunks
from providers.local.runner import PrefillChunk, RowSampling


def cold_burst(lengths: list[int], starts: list[int]) -> list[PrefillChunk]:
    prefills = [
        PromptPrefill(Job(list(range(length)), [RowSampling()], [], 1), [slot], done=start)
        for slot, (length, start) in enumerate(zip(lengths, starts, strict=True))
    ]
    return [chunk for _, chunk in plan_chunks(prefills, DEFAULT_COLD_PREFILL_TOKENS, padded=True)]


def test_a_cold_burst_runs_in_precompiled_shapes_within_the_pass_budget() -> None:
    buckets = Buckets(max_slots=16, max_context=2048)  # the default config
    compiled = set(buckets.chunk_shapes())
    bursts = [
        ([40, 45, 38, 41] * 4, [0] * 16),  # sixteen chat prompts: 16 x 45 padded
        ([1572], [0]),  # a long system prompt, cold: 1,024 tokens in this step
        ([1572, 60, 60], [1024, 0, 0]),  # its rest, then two short prompts beside it
        ([1400, 1400], [1392, 1376]),  # prompts mostly loaded from the prefix store
        ([2048] * 16, [0] * 16),  # sixteen full-context prompts: one row each step
    ]
    for lengths, starts in bursts:
        chunks = cold_burst(lengths, starts)
        assert chunks
        passes = plan_passes(chunks, buckets)
        for planned in passes:
            assert planned.shape in compiled
            assert planned.shape.rows * planned.shape.length <= buckets.chunk_limit
        covered = sum(len(piece.tokens) for planned in passes for piece in planned.pieces)
        assert covered == sum(len(chunk.tokens) for chunk in chunks)
    # Sixteen 45-token prompts: four passes of four 64-token rows, one engine step.
    sixteen = plan_passes(cold_burst([40, 45, 38, 41] * 4, [0] * 16), buckets)
    assert [(p.shape.rows, p.shape.length) for p in sixteen] == [(4, 64)] * 4
