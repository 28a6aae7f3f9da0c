"""`TorchSampler`: the sampling pipeline of `providers.local.pipeline` in PyTorch, on a
batch of logits [rows, V]: the steps are this module's functions of the same names, run
by `run_pipeline`."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from providers.local.batch_flags import BatchFlags, has_penalty
from providers.local.pipeline import run_pipeline
from providers.local.runner import PromptScores, RowSampling, Sampled

SEED_SPACE = 2**64  # torch.Generator.manual_seed takes 64-bit seeds


class TorchSampler:
    """Turns logits into tokens, with per-row generators on `device`."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)

    def new_generator(self, seed: int | None) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        if seed is None:
            seed = int.from_bytes(os.urandom(8), "little")
        generator.manual_seed(seed % SEED_SPACE)
        return generator

    def sample(self, logits: torch.Tensor, rows: Sequence[RowSampling]) -> list[Sampled]:
        if logits.shape[0] != len(rows):
            raise ValueError(f"{logits.shape[0]} rows of logits for {len(rows)} rows")
        for row in rows:
            if row.generator is None:
                row.generator = self.new_generator(row.seed)
        flags = BatchFlags.of(rows)
        with torch.inference_mode():
            logits = logits.to(self.device, torch.float32)
            logprobs, tokens = run_pipeline(TorchSteps(), logits, rows, flags)
            return _results(logprobs, tokens, rows, flags.max_top_logprobs)

    def score_prompt(self, logits: torch.Tensor, tokens: Sequence[int], top: int) -> PromptScores:
        if logits.shape[0] != len(tokens):
            raise ValueError(f"{logits.shape[0]} positions of logits for {len(tokens)} tokens")
        with torch.inference_mode():
            # Position i-1 predicts token i; the last position predicts what follows.
            logprobs = model_logprobs(logits[:-1].to(self.device, torch.float32))
            targets = torch.tensor(tokens[1:], dtype=torch.long, device=self.device)
            chosen = logprobs.gather(1, targets[:, None])[:, 0].tolist()
            tops = _top_lists(logprobs, top) if top > 0 else [()] * len(chosen)
        return PromptScores(logprobs=(None, *chosen), top=(None, *tops))


def model_logprobs(logits: torch.Tensor) -> torch.Tensor:
    """Step 1: the model's own distribution, before any request setting bends it."""
    return torch.log_softmax(logits, dim=-1)


def apply_logit_bias(logits: torch.Tensor, rows: Sequence[RowSampling]) -> torch.Tensor:
    """Step 2: add each row's bias to its tokens' logits."""
    vocab = logits.shape[-1]
    bias = torch.zeros_like(logits)
    for index, row in enumerate(rows):
        if not row.logit_bias:
            continue
        token_ids = list(row.logit_bias)
        if min(token_ids) < 0 or max(token_ids) >= vocab:
            raise ValueError(f"logit_bias names a token outside the vocabulary 0..{vocab - 1}")
        values = [row.logit_bias[token] for token in token_ids]
        bias[index, token_ids] = torch.tensor(values, dtype=bias.dtype, device=bias.device)
    return logits + bias


def apply_penalties(logits: torch.Tensor, rows: Sequence[RowSampling]) -> torch.Tensor:
    """Step 3: logit[j] -= count[j] * frequency + (count[j] > 0) * presence, counting the
    tokens this row has generated (not its prompt)."""
    vocab = logits.shape[-1]
    counts = torch.zeros_like(logits)
    frequency = torch.zeros(len(rows), 1, dtype=logits.dtype, device=logits.device)
    presence = torch.zeros_like(frequency)
    for index, row in enumerate(rows):
        if not has_penalty(row):
            continue
        generated = torch.tensor(row.generated, dtype=torch.long, device=logits.device)
        counts[index] = torch.bincount(generated, minlength=vocab)[:vocab].to(logits.dtype)
        frequency[index, 0] = row.frequency_penalty
        presence[index, 0] = row.presence_penalty
    return logits - counts * frequency - (counts > 0).to(logits.dtype) * presence


def apply_temperature(logits: torch.Tensor, rows: Sequence[RowSampling]) -> torch.Tensor:
    """Step 4 for sampling rows: logits / temperature (greedy rows are left as they are;
    `sample_tokens` gives them their argmax)."""
    temperatures = [row.temperature if row.temperature > 0 else 1.0 for row in rows]
    divisor = torch.tensor(temperatures, dtype=logits.dtype, device=logits.device)
    return logits / divisor[:, None]


def apply_top_p(logits: torch.Tensor, rows: Sequence[RowSampling]) -> torch.Tensor:
    """Step 5: keep the smallest set of most likely tokens whose mass reaches top_p.

    A token is kept while the mass of the tokens ranked above it is still below top_p; the
    top token is always kept (top_p = 0 means greedy). Rows with top_p >= 1 are untouched:
    float rounding of the cumulative sum must not drop their tail."""
    thresholds = [row.top_p if row.top_p < 1 else float("inf") for row in rows]
    top_p = torch.tensor(thresholds, dtype=logits.dtype, device=logits.device)[:, None]
    ordered, order = logits.sort(dim=-1, descending=True)
    probs = ordered.softmax(dim=-1)
    mass_above = probs.cumsum(dim=-1) - probs
    drop = mass_above >= top_p
    drop[:, 0] = False
    ordered = ordered.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, order, ordered)


def sample_tokens(
    logits: torch.Tensor, greedy: torch.Tensor, rows: Sequence[RowSampling]
) -> torch.Tensor:
    """Step 6: draw each sampling row's token from softmax(logits) with its own generator."""
    probs = logits.softmax(dim=-1)
    tokens = greedy.clone()
    for index, row in enumerate(rows):
        if row.temperature != 0:
            drawn = torch.multinomial(probs[index], 1, generator=row.generator)
            tokens[index] = drawn[0]
    return tokens


def greedy_tokens(logits: torch.Tensor) -> torch.Tensor:
    """Step 4 for greedy rows: the argmax after steps 2-3."""
    return logits.argmax(dim=-1)


class TorchSteps:
    """This module's steps as `run_pipeline` takes them."""

    model_logprobs = staticmethod(model_logprobs)
    apply_logit_bias = staticmethod(apply_logit_bias)
    apply_penalties = staticmethod(apply_penalties)
    greedy_tokens = staticmethod(greedy_tokens)
    apply_temperature = staticmethod(apply_temperature)
    apply_top_p = staticmethod(apply_top_p)
    sample_tokens = staticmethod(sample_tokens)


def _results(
    logprobs: torch.Tensor, tokens: torch.Tensor, rows: Sequence[RowSampling], top: int
) -> list[Sampled]:
    chosen = logprobs.gather(1, tokens[:, None])[:, 0].tolist()
    tops = _top_lists(logprobs, top) if top > 0 else [()] * len(rows)
    return [
        Sampled(token=token, logprob=logprob, top=alternatives[: row.top_logprobs])
        for token, logprob, alternatives, row in zip(
            tokens.tolist(), chosen, tops, rows, strict=True
        )
    ]


def _top_lists(logprobs: torch.Tensor, top: int) -> list[tuple[tuple[int, float], ...]]:
    """The `top` best (token, logprob) pairs of each row, best first."""
    values, indices = logprobs.topk(min(top, logprobs.shape[-1]), dim=-1)
    return [
        tuple(zip(row_indices, row_values, strict=True))
        for row_indices, row_values in zip(indices.tolist(), values.tolist(), strict=True)
    ]
