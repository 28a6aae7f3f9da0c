"""The JAX forward pass against transformers' (and so against the torch runner, which is
held to the same reference): logits in float32 within 1e-4 relative, at prefill, step by
step, in batches of slots at different lengths; slot copies; bucketed compilation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

from providers.jax.runner import JaxRunner
from providers.jax.weights import JaxLlama, jax_llama
from providers.torch.llama_weights import LlamaShape
from providers.torch.loading import LoadedModel
from tests.providers.jax.conftest import MAX_CONTEXT

PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n",
    "Once upon a time, in a land far away, there lived a dragon who loved to read books "
    "about the sea, the stars and the long history of the mountain kingdoms.",
    "1, 2, 3, 4, 5,",
)
RELATIVE = 1e-4  # of the largest logit's magnitude


def reference_logits(model: Any, tokens: Sequence[int]) -> np.ndarray:
    with torch.inference_mode():
        logits: torch.Tensor = model(torch.tensor([list(tokens)])).logits[0]
    return logits.float().numpy()


def assert_close(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape
    assert ours.dtype == np.float32
    error = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
    assert error < RELATIVE, f"relative error {error:.2e}"


def encode(loaded: LoadedModel, text: str) -> list[int]:
    tokens: list[int] = loaded.tokenizer(text)["input_ids"]
    return tokens


@pytest.fixture(scope="module")
def runner(jax_smollm2: tuple[JaxLlama, LlamaShape]) -> JaxRunner:
    model, shape = jax_smollm2
    return JaxRunner(
        model, shape, max_slots=4, max_context=MAX_CONTEXT, device=jax.devices("cpu")[0]
    )


@pytest.mark.parametrize("prompt", PROMPTS)
def test_prefill_matches_transformers(smollm2: LoadedModel, runner: JaxRunner, prompt: str) -> None:
    tokens = encode(smollm2, prompt)
    logits = runner.prefill(0, tokens)
    expected = reference_logits(smollm2.model, tokens)
    assert_close(logits[-1], expected[-1])  # the final position: what is sampled from
    assert_close(logits, expected)  # and every other (echo scores them)
    assert runner.length(0) == len(tokens)


def test_decode_step_by_step_matches_full_forward(smollm2: LoadedModel, runner: JaxRunner) -> None:
    tokens = encode(smollm2, PROMPTS[2])
    expected = reference_logits(smollm2.model, tokens)
    runner.prefill(1, tokens[:4])
    for position in range(4, len(tokens)):
        assert_close(runner.decode([1], [tokens[position]])[0], expected[position])
    assert runner.length(1) == len(tokens)


def test_batch_of_slots_at_different_lengths_matches_transformers(
    smollm2: LoadedModel, runner: JaxRunner
) -> None:
    prompts = [encode(smollm2, prompt) for prompt in PROMPTS[:3]]
    # Three rows (padded to a batch of four), slots out of order.
    slots = [3, 1, 2]
    for slot, prompt in zip(slots, prompts, strict=True):
        runner.prefill(slot, prompt[:-1])
    logits = runner.decode(slots, [prompt[-1] for prompt in prompts])
    assert logits.shape == (3, runner.vocab_size)
    for row, prompt in enumerate(prompts):
        assert_close(logits[row], reference_logits(smollm2.model, prompt)[-1])
        assert runner.length(slots[row]) == len(prompt)


def test_copy_slot_then_decode_both_gives_identical_logits(
    smollm2: LoadedModel, runner: JaxRunner
) -> None:
    tokens = encode(smollm2, PROMPTS[0])
    runner.prefill(0, tokens)
    runner.prefill(2, encode(smollm2, PROMPTS[2]))  # stale, longer contents to overwrite
    runner.copy_slot(0, 2)
    assert runner.length(2) == len(tokens)
    logits = runner.decode([0, 2], [42, 42])
    np.testing.assert_array_equal(logits[0], logits[1])
    assert_close(logits[0], reference_logits(smollm2.model, [*tokens, 42])[-1])


def test_new_prompt_lengths_in_a_bucket_do_not_recompile(
    smollm2: LoadedModel, runner: JaxRunner
) -> None:
    tokens = encode(smollm2, PROMPTS[2])  # 35 tokens: the 64-token prompt bucket
    runner.prefill(0, tokens)
    runner.decode([0], [5])
    compiled = runner.steps.stats.count
    for length in (len(tokens) - 1, 40, 50):  # new lengths, the same bucket
        prompt = (tokens * 2)[:length]
        assert runner.buckets.prompt(length) == runner.buckets.prompt(len(tokens))
        logits = runner.prefill(0, prompt)
        assert logits.shape == (length, runner.vocab_size)
        assert_close(logits[-1], reference_logits(smollm2.model, prompt)[-1])
        runner.decode([0], [5])
    assert runner.steps.stats.count == compiled
    assert runner.steps.stats.seconds > 0


def test_rejects_bad_slots_and_overflow(runner: JaxRunner) -> None:
    with pytest.raises(ValueError, match="out of range"):
        runner.prefill(4, [1, 2])
    with pytest.raises(ValueError, match="distinct"):
        runner.decode([0, 0], [1, 2])
    with pytest.raises(ValueError, match=f"1 to {MAX_CONTEXT} tokens"):
        runner.prefill(0, [1] * (MAX_CONTEXT + 1))
    runner.prefill(3, [1] * 3)
    runner.free(3)
    assert runner.length(3) == 0


def tiny_model(config_class: Any, **settings: Any) -> Any:
    config = config_class(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        **settings,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
        config, attn_implementation="eager"
    )
    return model.eval()


@pytest.mark.parametrize(
    ("config_class", "settings"),
    [
        (Qwen2Config, {}),  # q/k/v biases
        (
            LlamaConfig,
            {
                "rope_parameters": {
                    "rope_type": "llama3",
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_position_embeddings": 32,
                    "rope_theta": 500000.0,
                }
            },
        ),
    ],
    ids=["qwen2-qkv-bias-untied", "llama3-rope-untied"],
)
def test_other_layouts_match_transformers(config_class: Any, settings: dict[str, Any]) -> None:
    model = tiny_model(config_class, **settings)
    tokens = list(range(3, 103))  # past the llama3 original window of 32
    expected = reference_logits(model, tokens)
    device = jax.devices("cpu")[0]
    weights, shape = jax_llama(model, max_context=128, dtype=jnp.float32, device=device)
    assert weights.lm_head is not None
    runner = JaxRunner(weights, shape, max_slots=1, max_context=128, device=device)
    assert_close(runner.prefill(0, tokens[:60]), expected[:60])
    for position in range(60, len(tokens)):
        assert_close(runner.decode([0], [tokens[position]])[0], expected[position])


def test_refuses_unsupported_models() -> None:
    model = tiny_model(LlamaConfig)
    model.config.model_type = "gemma"
    with pytest.raises(ValueError, match="model_type 'gemma' is not supported"):
        jax_llama(model, max_context=64, dtype=jnp.float32, device=jax.devices("cpu")[0])
