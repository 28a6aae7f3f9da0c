"""The JAX forward pass against transformers' and against the torch runner's: logits in
float32 within 1e-4 relative, at prefill, step by step, in batches of slots at different
lengths; slot copies; bucketed compilation (nothing compiles for a new prompt length in a
compiled bucket, sampler steps included); recovery from a failed step.

"Relative" is max |ours - theirs| / max |theirs| over the logits compared: the largest
error against the largest logit's magnitude."""

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
from providers.jax.sampling import JaxSampler
from providers.jax.weights import JaxLlama, jax_llama
from providers.local.runner import CacheLost, RowSampling
from providers.torch.llama_weights import LlamaShape
from providers.torch.loading import LoadedModel
from providers.torch.runner import TorchRunner
from tests.providers.jax.conftest import MAX_CONTEXT, counted_compiles

PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n",
    "Once upon a time, in a land far away, there lived a dragon who loved to read books "
    "about the sea, the stars and the long history of the mountain kingdoms.",
    "1, 2, 3, 4, 5,",
)
RELATIVE = 1e-4  # max |ours - theirs| / max |theirs|


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
    expected = reference_logits(smollm2.model, tokens)
    assert_close(runner.prefill(0, tokens), expected[-1:])  # the final position: sampled
    assert_close(runner.prefill(1, tokens, every_position=True), expected)  # echo scores
    assert runner.length(0) == runner.length(1) == len(tokens)


def test_final_position_logits_equal_the_torch_runners(
    smollm2: LoadedModel, runner: JaxRunner
) -> None:
    """The two providers' runners side by side, after a prefill and after a decode step."""
    torch_runner = TorchRunner.from_loaded(smollm2, max_slots=1, max_context=MAX_CONTEXT)
    for prompt in PROMPTS:
        tokens = encode(smollm2, prompt)
        ours, theirs = runner.prefill(0, tokens), torch_runner.prefill(0, tokens).numpy()
        assert ours.shape == theirs.shape == (1, runner.vocab_size)
        assert_close(ours, theirs)
        assert_close(runner.decode([0], [42]), torch_runner.decode([0], [42]).numpy())


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


def serve_once(runner: JaxRunner, sampler: JaxSampler, prompt: Sequence[int]) -> np.ndarray:
    """What the engine does with a prompt, every sampling step included: prefill, sample
    the first token, copy the slot for a second candidate, decode both, sample both, and
    score the prompt (echo with logprobs). → the prefill's logits."""
    row = RowSampling(
        temperature=0.7,
        top_p=0.9,
        logit_bias={5: 2.0},
        frequency_penalty=0.3,
        seed=1,
        top_logprobs=3,
        generated=[5],
    )
    last = runner.prefill(0, prompt)
    sampler.sample(last, [row])
    runner.copy_slot(0, 1)
    sampler.sample(runner.decode([0, 1], [5, 5]), [row, row])
    scored = runner.prefill(2, prompt, every_position=True)
    sampler.score_prompt(scored, prompt, 3)
    return last


def test_new_prompt_lengths_in_a_bucket_compile_nothing(
    smollm2: LoadedModel, runner: JaxRunner
) -> None:
    """Counted with jax's own compile events, on this thread (not the runner's records)."""
    sampler = JaxSampler(jax.devices("cpu")[0])
    tokens = encode(smollm2, PROMPTS[2])  # 35 tokens: the 64-token prompt bucket
    for warm_up in (tokens, tokens[:5]):  # and the smallest bucket, 16
        serve_once(runner, sampler, warm_up)
    with counted_compiles(this_thread_only=True) as compiles:
        for length in (len(tokens) - 1, 40, 50, 3, 9, 16):  # new lengths, the same buckets
            prompt = (tokens * 2)[:length]
            logits = serve_once(runner, sampler, prompt)
            assert_close(logits, reference_logits(smollm2.model, prompt)[-1:])
    assert compiles == []
    assert runner.steps.stats.seconds > 0


def test_a_failed_step_empties_every_slot_and_the_runner_serves_on(
    smollm2: LoadedModel, runner: JaxRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = encode(smollm2, PROMPTS[0])
    runner.prefill(0, tokens)
    runner.copy_slot(0, 1)

    def failing_step(*shape: Any) -> Any:
        def step(model: JaxLlama, cache: Any, *inputs: Any) -> Any:
            cache.keys.delete()  # a donating step consumed its cache, then failed
            cache.values.delete()
            raise RuntimeError("RESOURCE_EXHAUSTED: out of memory")

        return step

    monkeypatch.setattr(runner.steps, "decode", failing_step)
    with pytest.raises(CacheLost, match="RESOURCE_EXHAUSTED"):
        runner.decode([0, 1], [42, 42])
    monkeypatch.undo()
    assert [runner.length(slot) for slot in range(runner.max_slots)] == [0] * runner.max_slots
    runner.prefill(1, tokens)
    assert_close(runner.decode([1], [42]), reference_logits(smollm2.model, [*tokens, 42])[-1:])


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
    assert_close(runner.prefill(0, tokens[:60], every_position=True), expected[:60])
    for position in range(60, len(tokens)):
        assert_close(runner.decode([0], [tokens[position]])[0], expected[position])


def test_refuses_unsupported_models() -> None:
    model = tiny_model(LlamaConfig)
    model.config.model_type = "gemma"
    with pytest.raises(ValueError, match="model_type 'gemma' is not supported"):
        jax_llama(model, max_context=64, dtype=jnp.float32, device=jax.devices("cpu")[0])
