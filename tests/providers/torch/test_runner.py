"""`TorchRunner` with `TorchSampler`: forward-pass counting and a greedy generation loop."""

from __future__ import annotations

import pytest

from providers.local.runner import RowSampling
from providers.torch.loading import LoadedModel
from providers.torch.runner import TorchRunner
from providers.torch.sampling import TorchSampler


@pytest.fixture(scope="module")
def runner(smollm2: LoadedModel) -> TorchRunner:
    return TorchRunner.from_loaded(smollm2, max_slots=4, max_context=256)


def chat_prompt(loaded: LoadedModel, question: str) -> list[int]:
    messages = [{"role": "user", "content": question}]
    rendered = loaded.tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )
    assert isinstance(rendered, str)
    tokens: list[int] = loaded.tokenizer(rendered, add_special_tokens=False)["input_ids"]
    return tokens


def test_greedy_generation_answers_paris(smollm2: LoadedModel, runner: TorchRunner) -> None:
    sampler = TorchSampler()
    row = RowSampling(temperature=0)
    logits = runner.prefill(0, chat_prompt(smollm2, "What is the capital of France?"))
    sampled = sampler.sample(logits[-1:], [row])[0]
    while sampled.token not in smollm2.eos_token_ids and len(row.generated) < 24:
        row.generated.append(sampled.token)
        sampled = sampler.sample(runner.decode([0], [sampled.token]), [row])[0]
    runner.free(0)
    assert "Paris" in smollm2.tokenizer.decode(row.generated)


def test_counts_forward_passes(runner: TorchRunner) -> None:
    before = runner.counts.prefills, runner.counts.decodes, runner.counts.decode_tokens
    runner.prefill(1, [1, 2, 3])
    for target in (2, 3):
        runner.copy_slot(1, target)
    runner.decode([1, 2, 3], [4, 4, 4])
    assert runner.length(3) == 4
    after = runner.counts.prefills, runner.counts.decodes, runner.counts.decode_tokens
    assert after == (before[0] + 1, before[1] + 1, before[2] + 3)
    assert runner.vocab_size == 49152
    assert (runner.max_slots, runner.max_context) == (4, 256)
