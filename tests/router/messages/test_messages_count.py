"""`POST /v1/messages/count_tokens` through the official `anthropic` SDK: counted with the
tokenizer a deployment declares (`tokenizer:`), exactly as that tokenizer's chat template
counts the chat form of the prompt, else estimated for a remote OpenAI-compatible
deployment; the `x-turnout-token-count` header says which. Nothing reaches the backend."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import anthropic
import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.local_tokenizer import smollm2_tokenizer
from tests.turnout_server import RunningTurnout, simple_config

KEY = "sk-count"
SMOL = "smollm2-135m-instruct"
SYSTEM = "Be brief."
QUESTION = "count these words for me please"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIUpstream]:
    with FakeOpenAIUpstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def client(upstream: FakeOpenAIUpstream) -> Iterator[anthropic.Anthropic]:
    models = {
        "remote": {"deployments": [{"provider": "up", "model": "remote-model"}]},
        "counted": {"deployments": [{"provider": "up", "model": "smol", "tokenizer": SMOL}]},
    }
    config = simple_config({"up": upstream.base_url}, models=models, keys=[{"key": KEY}])
    running = RunningTurnout(config).start()
    with anthropic.Anthropic(base_url=running.url, api_key=KEY, max_retries=0, timeout=60) as sdk:
        yield sdk
    running.stop()


def test_a_remote_deployment_gets_an_estimate_said_as_such(
    client: anthropic.Anthropic, upstream: FakeOpenAIUpstream
) -> None:
    raw = client.messages.with_raw_response.count_tokens(
        model="remote", system=SYSTEM, messages=[{"role": "user", "content": QUESTION}]
    )
    short = client.messages.count_tokens(
        model="remote", messages=[{"role": "user", "content": "hi"}]
    )

    assert raw.headers["x-turnout-token-count"] == "estimate"
    assert raw.parse().input_tokens > short.input_tokens > 0
    assert not [r for r in upstream.requests if r.method == "POST"]


def test_a_declared_tokenizer_counts_the_prompt_as_its_chat_template_does(
    client: anthropic.Anthropic, upstream: FakeOpenAIUpstream
) -> None:
    tokenizer = smollm2_tokenizer()  # skips where the packaged model is absent
    raw = client.messages.with_raw_response.count_tokens(
        model="counted",
        system=[{"type": "text", "text": SYSTEM}],
        messages=[{"role": "user", "content": [{"type": "text", "text": QUESTION}]}],
    )
    chat: list[Any] = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": QUESTION},
    ]
    expected = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)
    if isinstance(expected, Mapping):  # newer transformers answer a BatchEncoding
        expected = expected["input_ids"]

    assert raw.headers["x-turnout-token-count"] == "tokenizer"
    assert raw.parse().input_tokens == len(expected)
    assert not [r for r in upstream.requests if r.method == "POST"]
