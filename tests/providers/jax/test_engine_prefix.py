"""The shared `Engine` over the JAX runner with the prefix cache and chunked prefill, beside
the same engine over the torch runner: greedy text, tokens and logprobs agree, on prompts
that share a head and diverge mid-block, and a second round reuses every whole block and
computes only the tokens after them (at least each prompt's last)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jax
import pytest

from providers.jax.runner import JaxRunner
from providers.jax.sampling import JaxSampler
from providers.jax.weights import JaxLlama
from providers.local.engine import Engine
from providers.local.settings import PrefixCacheSettings
from providers.torch.llama_weights import LlamaShape
from providers.torch.loading import LoadedModel
from tests.providers.jax.conftest import MAX_CONTEXT
from tests.providers.jax.test_forward import encode
from tests.providers.local import test_engine_prefill
from tests.providers.local.test_engine_prefill import (
    BLOCK,
    PROMPTS,
    assert_same_outputs,
    computed_when_held,
    make_engine,
    make_runner,
    outputs,
)

CHUNK_TOKENS = 24  # the shared head takes two steps' chunks


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    started: list[Engine] = []
    yield started
    for engine in started:
        engine.close()


def test_jax_and_torch_engines_agree_with_prefix_reuse(
    smollm2: LoadedModel,
    jax_smollm2: tuple[JaxLlama, LlamaShape],
    engines: list[Engine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The JAX engine compiles its steps on first use (no compile_ahead here: it would
    # compile every bucket), seconds each on a busy CPU: a longer wait than the torch tests'.
    monkeypatch.setattr(test_engine_prefill, "WAIT", 300.0)
    prompts = [encode(smollm2, text) for text in PROMPTS]
    model, shape = jax_smollm2
    device = jax.devices("cpu")[0]
    runner = JaxRunner(
        model,
        shape,
        max_slots=3,
        max_context=MAX_CONTEXT,
        device=device,
        prefill_chunk_tokens=CHUNK_TOKENS,
        prefix_cache=PrefixCacheSettings(max_tokens=512, block_tokens=BLOCK),
    )
    ours = Engine(
        runner,
        JaxSampler(device),
        name="jax",
        prefill_chunk_tokens=CHUNK_TOKENS,
        cold_prefill_tokens=CHUNK_TOKENS,  # chunked even while no stream decodes
    )
    theirs = make_engine(make_runner(smollm2, prefix_tokens=512), chunk_tokens=CHUNK_TOKENS)
    engines += [ours, theirs]
    reference: list[Any] = outputs(theirs, prompts, together=True)
    assert_same_outputs(outputs(ours, prompts, together=True), reference)
    before = runner.counts.prefill_tokens
    # The second round starts from what the first stored (prompt + answer).
    assert_same_outputs(outputs(ours, prompts, together=True), reference)
    computed = runner.counts.prefill_tokens - before
    assert computed == sum(computed_when_held(p) for p in prompts)
    assert ours.prefix_cache.stats.reused > 0
