"""The context window, max_tokens, unsupported `suffix`, and usage counted exactly."""

from __future__ import annotations

import openai
import pytest

from providers.torch.loading import LoadedModel
from providers.torch.runner import TorchRunner
from tests.local_sampler.conftest import CHAT_MODEL, MAX_CONTEXT
from tests.local_sampler.prompts import FRANCE, STORY
from tests.local_sampler.reference import chat_ids, prompt_ids


def test_prompt_longer_than_the_window_is_context_length_exceeded(
    client: openai.OpenAI, reference_model: LoadedModel
) -> None:
    prompt = "hello " * 1100
    length = len(prompt_ids(reference_model, prompt))
    assert length > MAX_CONTEXT
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=CHAT_MODEL, prompt=prompt, max_tokens=16)
    assert caught.value.code == "context_length_exceeded"
    message = caught.value.message
    assert str(MAX_CONTEXT) in message
    assert f"{length + 16} tokens ({length} in the prompt, 16 in the completion)" in message


def test_prompt_plus_max_tokens_beyond_the_window_is_refused(
    client: openai.OpenAI, reference_model: LoadedModel
) -> None:
    length = len(prompt_ids(reference_model, STORY))
    wanted = MAX_CONTEXT - length + 1
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=CHAT_MODEL, prompt=STORY, max_tokens=wanted)
    assert caught.value.code == "context_length_exceeded"
    assert f"{MAX_CONTEXT + 1} tokens ({length} in the prompt" in caught.value.message

    messages = [{"role": "user", "content": "hello " * 1100}]
    with pytest.raises(openai.BadRequestError) as chat_caught:
        client.chat.completions.create(model=CHAT_MODEL, messages=messages, max_tokens=4)  # type: ignore[arg-type]
    assert chat_caught.value.code == "context_length_exceeded"
    assert "in the messages" in chat_caught.value.message


def test_suffix_is_refused_for_a_model_without_fill_in_the_middle(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(
            model=CHAT_MODEL, prompt="def f(", suffix="return x", max_tokens=4
        )
    body = caught.value.body
    assert isinstance(body, dict)
    assert body.get("param") == "suffix"


def test_max_tokens_cuts_with_finish_reason_length(client: openai.OpenAI) -> None:
    answer = client.completions.create(
        model=CHAT_MODEL, prompt=STORY, max_tokens=7, logprobs=0, temperature=0
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "length"
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 7
    assert choice.logprobs is not None
    assert choice.logprobs.tokens is not None
    assert len(choice.logprobs.tokens) == 7

    chat = client.chat.completions.create(
        model=CHAT_MODEL, messages=FRANCE, max_completion_tokens=3, temperature=0
    )
    assert chat.choices[0].finish_reason == "length"
    assert chat.usage is not None
    assert chat.usage.completion_tokens == 3


def test_completions_usage_is_exact(
    client: openai.OpenAI, reference_model: LoadedModel, runner: TorchRunner
) -> None:
    decodes = runner.counts.decode_tokens
    answer = client.completions.create(model=CHAT_MODEL, prompt=STORY, max_tokens=9)
    assert answer.usage is not None
    generated = runner.counts.decode_tokens - decodes + 1  # the first token needs no decode
    assert answer.usage.prompt_tokens == len(prompt_ids(reference_model, STORY))
    assert answer.usage.completion_tokens == generated
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + generated


def test_chat_usage_is_exact_and_counts_the_end_of_turn_token(
    client: openai.OpenAI, reference_model: LoadedModel, runner: TorchRunner
) -> None:
    decodes = runner.counts.decode_tokens
    answer = client.chat.completions.create(
        model=CHAT_MODEL, messages=FRANCE, temperature=0, logprobs=True, max_tokens=40
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "stop"  # the model ended its turn
    assert answer.usage is not None
    assert choice.logprobs is not None
    assert choice.logprobs.content is not None
    assert answer.usage.prompt_tokens == len(chat_ids(reference_model, FRANCE))
    generated = runner.counts.decode_tokens - decodes + 1
    assert answer.usage.completion_tokens == generated == len(choice.logprobs.content) + 1

    stream = client.chat.completions.create(
        model=CHAT_MODEL,
        messages=FRANCE,
        temperature=0,
        max_tokens=40,
        stream=True,
        stream_options={"include_usage": True},
    )
    usages = [chunk.usage for chunk in stream if chunk.usage is not None]
    assert usages == [answer.usage]
