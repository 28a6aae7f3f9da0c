"""`LocalGenerator` over a scripted runner and sampler (no model): a prompt's tokenization
runs on a worker thread, so the event loop serves other requests meanwhile."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from providers.capabilities import Capabilities
from providers.errors import UpstreamError
from providers.local.provider import LocalGenerator, LocalModel
from providers.local.runner import PrefillChunk, PromptScores, RowSampling, Sampled
from providers.local.tokenizer import TokenizerAdapter
from providers.types import Endpoint, ProviderRequest
from tests.providers.local.tiny_tokenizers import byte_tokenizer

SLOW_PROMPT = "a prompt that takes long to tokenize"
MAX_CONTEXT = 64
WAIT = 10.0


class ScriptedRunner:
    """A `ModelRunner` whose logits are zeros: the scripted sampler decides the tokens."""

    max_slots = 2
    max_context = MAX_CONTEXT
    block_tokens = 16
    store_blocks = 0  # no prefix store

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    def prefill(self, slot: int, tokens: Sequence[int], *, every_position: bool = False) -> Any:
        return np.zeros((len(tokens) if every_position else 1, self.vocab_size), np.float32)

    def prefill_chunks(self, chunks: Sequence[PrefillChunk]) -> list[Any]:
        return [self.prefill(c.slot, c.tokens, every_position=c.every_position) for c in chunks]

    def save_blocks(self, slot: int, blocks: Sequence[tuple[int, int]]) -> None:
        pass

    def load_blocks(self, slot: int, block_ids: Sequence[int]) -> None:
        pass

    def decode(self, slots: Sequence[int], tokens: Sequence[int]) -> Any:
        return np.zeros((len(slots), self.vocab_size), np.float32)

    def copy_slot(self, source: int, target: int) -> None:
        pass

    def free(self, slot: int) -> None:
        pass


class ScriptedSampler:
    """Always samples `token`."""

    def __init__(self, token: int) -> None:
        self.token = token

    def new_generator(self, seed: int | None) -> None:
        return None

    def sample(self, logits: Any, rows: Sequence[RowSampling]) -> list[Sampled]:
        return [Sampled(self.token, 0.0) for _ in rows]

    def score_prompt(self, logits: Any, tokens: Sequence[int], top: int) -> PromptScores:
        return PromptScores((None,) * len(tokens), (None,) * len(tokens))


class SlowTokenizer(TokenizerAdapter):
    """Holds the tokenization of `SLOW_PROMPT` until `release` is set, recording the thread
    it ran on."""

    def __init__(self) -> None:
        super().__init__(byte_tokenizer())
        self.entered = threading.Event()
        self.release = threading.Event()
        self.threads: list[threading.Thread] = []

    def encode_prompt(self, prompt: str | Sequence[int]) -> list[int]:
        self.threads.append(threading.current_thread())
        if prompt == SLOW_PROMPT:
            self.entered.set()
            self.release.wait(WAIT)
        return super().encode_prompt(prompt)


def completion(prompt: str, **settings: Any) -> ProviderRequest:
    body = {"model": "scripted", "prompt": prompt, "temperature": 0, **settings}
    return ProviderRequest(Endpoint.COMPLETIONS, body)


async def started_generator(adapter: TokenizerAdapter) -> LocalGenerator:
    token = adapter.encode_text("a")[0]
    model = LocalModel(ScriptedRunner(adapter.vocab_size), ScriptedSampler(token), adapter)
    generator = LocalGenerator("scripted", lambda: model, Capabilities(embeddings=False))
    await generator.start()
    return generator


async def test_a_prompt_being_tokenized_holds_up_no_other_stream() -> None:
    adapter = SlowTokenizer()
    generator = await started_generator(adapter)
    try:
        slow = asyncio.create_task(generator.complete(completion(SLOW_PROMPT, max_tokens=2)))
        assert await asyncio.to_thread(adapter.entered.wait, WAIT)
        # Were the tokenization on the event loop, nothing would run until it let go.
        streamed = [
            chunk["choices"][0].get("text", "")
            async for chunk in generator.stream(completion("hi", max_tokens=4, stream=True))
            if chunk["choices"]
        ]
        assert "".join(streamed) == "aaaa"
        assert not slow.done()
        adapter.release.set()
        answer = await asyncio.wait_for(slow, WAIT)
        assert answer.body["choices"][0]["text"] == "aa"
        assert threading.main_thread() not in adapter.threads
    finally:
        adapter.release.set()
        await generator.aclose()


async def test_context_window_errors_come_back_from_the_worker_thread() -> None:
    generator = await started_generator(TokenizerAdapter(byte_tokenizer()))
    try:
        with pytest.raises(UpstreamError) as caught:
            await generator.complete(completion("x" * MAX_CONTEXT, max_tokens=4))
        assert caught.value.status == 400
        assert caught.value.code == "context_length_exceeded"
        assert f"{MAX_CONTEXT + 4} tokens ({MAX_CONTEXT} in the prompt" in str(caught.value)
    finally:
        await generator.aclose()
