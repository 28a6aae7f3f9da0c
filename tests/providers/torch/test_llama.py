"""The Llama forward pass against transformers' own forward: prefill logits (the final
position's, or every position's for prompt scoring), step-by-step decode, batched decode
of slots at different lengths, copy_slot and free."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config

from providers.torch.llama import LlamaForward
from providers.torch.loading import LoadedModel

PROMPTS = (
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n",
    "Once upon a time, in a land far away, there lived a dragon who loved to read books "
    "about the sea, the stars and the long history of the mountain kingdoms.",
    "1, 2, 3, 4, 5,",
)


def reference_logits(model: Any, tokens: Sequence[int]) -> torch.Tensor:
    with torch.inference_mode():
        logits: torch.Tensor = model(torch.tensor([list(tokens)])).logits[0]
    return logits.float()


def assert_close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, theirs, atol=1e-3, rtol=1e-4)


def encode(loaded: LoadedModel, text: str) -> list[int]:
    tokens: list[int] = loaded.tokenizer(text)["input_ids"]
    return tokens


@pytest.fixture(scope="module")
def forward(smollm2: LoadedModel) -> LlamaForward:
    return LlamaForward(smollm2.model, max_slots=4, max_context=128)


@pytest.mark.parametrize("prompt", PROMPTS)
def test_prefill_matches_transformers(
    smollm2: LoadedModel, forward: LlamaForward, prompt: str
) -> None:
    tokens = encode(smollm2, prompt)
    expected = reference_logits(smollm2.model, tokens)
    assert_close(forward.prefill(0, tokens, every_position=True), expected)  # echo scores
    assert forward.length(0) == len(tokens)
    last = forward.prefill(1, tokens)  # what is sampled from: the final position only
    assert_close(last, expected[-1:])
    assert forward.length(1) == len(tokens)


def test_decode_step_by_step_matches_full_forward(
    smollm2: LoadedModel, forward: LlamaForward
) -> None:
    tokens = encode(smollm2, PROMPTS[2])
    expected = reference_logits(smollm2.model, tokens)
    forward.prefill(1, tokens[:4])
    for position in range(4, len(tokens)):
        logits = forward.decode([1], [tokens[position]])
        assert_close(logits[0], expected[position])
    assert forward.length(1) == len(tokens)


def test_batched_decode_of_slots_at_different_lengths_equals_single_decodes(
    smollm2: LoadedModel, forward: LlamaForward
) -> None:
    prompts = [encode(smollm2, prompt) for prompt in PROMPTS[:3]]
    next_tokens = [11, 22, 33]
    singles = []
    for prompt, token in zip(prompts, next_tokens, strict=True):
        forward.prefill(0, prompt)
        singles.append(forward.decode([0], [token])[0])
    # Slots out of order: exercises the gathered (non-contiguous) cache read.
    slots = [3, 1, 2]
    for slot, prompt in zip(slots, prompts, strict=True):
        forward.prefill(slot, prompt)
    batched = forward.decode(slots, next_tokens)
    for row, single in enumerate(singles):
        torch.testing.assert_close(batched[row], single, atol=1e-4, rtol=1e-4)
    for slot, prompt in zip(slots, prompts, strict=True):
        assert forward.length(slot) == len(prompt) + 1


def test_contiguous_batch_matches_transformers(smollm2: LoadedModel, forward: LlamaForward) -> None:
    prompts = [encode(smollm2, prompt) for prompt in PROMPTS]
    for slot, prompt in enumerate(prompts):
        forward.prefill(slot, prompt[:-1])
    logits = forward.decode([0, 1, 2, 3], [prompt[-1] for prompt in prompts])
    for row, prompt in enumerate(prompts):
        assert_close(logits[row], reference_logits(smollm2.model, prompt)[-1])


def test_copy_slot_then_decode_both_gives_identical_logits(
    smollm2: LoadedModel, forward: LlamaForward
) -> None:
    tokens = encode(smollm2, PROMPTS[0])
    forward.prefill(0, tokens)
    forward.prefill(2, encode(smollm2, PROMPTS[2]))  # stale, longer contents to overwrite
    forward.copy_slot(0, 2)
    assert forward.length(2) == len(tokens)
    logits = forward.decode([0, 2], [42, 42])
    torch.testing.assert_close(logits[0], logits[1], atol=0, rtol=0)


def test_free_then_reuse_a_slot(smollm2: LoadedModel, forward: LlamaForward) -> None:
    long_prompt, short_prompt = encode(smollm2, PROMPTS[2]), encode(smollm2, PROMPTS[3])
    forward.prefill(3, long_prompt)
    forward.decode([3], [5])
    forward.free(3)
    assert forward.length(3) == 0
    forward.prefill(3, short_prompt[:-1])
    logits = forward.decode([3], [short_prompt[-1]])
    assert_close(logits[0], reference_logits(smollm2.model, short_prompt)[-1])


def test_rejects_bad_slots_and_overflow(forward: LlamaForward) -> None:
    with pytest.raises(ValueError, match="out of range"):
        forward.prefill(4, [1, 2])
    with pytest.raises(ValueError, match="distinct"):
        forward.decode([0, 0], [1, 2])
    with pytest.raises(ValueError, match="1 to 128 tokens"):
        forward.prefill(0, [1] * 129)
    forward.prefill(0, [1] * 128)
    with pytest.raises(ValueError, match="full"):
        forward.decode([0], [1])


def test_shares_the_models_weights(smollm2: LoadedModel, forward: LlamaForward) -> None:
    decoder: Any = smollm2.model.model
    assert forward.weights.embed.data_ptr() == decoder.embed_tokens.weight.data_ptr()
    assert forward.weights.layers[0].q.weight.data_ptr() == (
        decoder.layers[0].self_attn.q_proj.weight.data_ptr()
    )


def tiny_model(config_class: Any, **settings: Any) -> Any:
    config = config_class(
        vocab_size=128,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        **settings,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(  # type: ignore[no-untyped-call]
        config, attn_implementation="eager"
    )
    return model.eval()


TINY_MODELS: dict[str, tuple[Any, dict[str, Any]]] = {
    "llama-llama3-rope": (
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
    "llama-linear-rope": (
        LlamaConfig,
        {"rope_parameters": {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}},
    ),
    "llama-yarn-rope": (
        LlamaConfig,
        {
            "rope_parameters": {
                "rope_type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": 32,
                "rope_theta": 10000.0,
            }
        },
    ),
    "mistral": (MistralConfig, {"sliding_window": None}),
    "qwen2-with-qkv-bias": (Qwen2Config, {}),
}


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_other_supported_architectures_match_transformers(name: str) -> None:
    config_class, settings = TINY_MODELS[name]
    model = tiny_model(config_class, **settings)
    tokens = list(range(3, 103))  # past the llama3/yarn original window of 32
    expected = reference_logits(model, tokens)
    forward = LlamaForward(model, max_slots=2, max_context=128)
    assert_close(forward.prefill(0, tokens[:60], every_position=True), expected[:60])
    for position in range(60, len(tokens)):
        assert_close(forward.decode([0], [tokens[position]])[0], expected[position])


def test_refuses_unsupported_models() -> None:
    model = tiny_model(LlamaConfig)
    model.config.model_type = "gemma"
    with pytest.raises(ValueError, match="model_type 'gemma' is not supported"):
        LlamaForward(model)
    dynamic = tiny_model(
        LlamaConfig,
        rope_parameters={"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0},
    )
    with pytest.raises(ValueError, match="rope_type 'dynamic'"):
        LlamaForward(dynamic)
    windowed = tiny_model(MistralConfig, sliding_window=16)
    with pytest.raises(ValueError, match="sliding window 16"):
        LlamaForward(windowed, max_context=64)
    assert LlamaForward(windowed, max_context=16).max_context == 16
