from __future__ import annotations

from openai.types import Completion
from openai.types.chat import ChatCompletion

from providers.emulation import AggregatedResponse
from providers.openai.adapter import OpenAIProvider
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok

from .conftest import chat, completion, posted


async def test_chat_equals_the_non_streamed_answer(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    text = "the quick brown fox jumps"
    upstream.enqueue(Ok(text=text), Ok(text=text))
    whole = (await provider.complete(chat(n=2))).body
    built = (await AggregatedResponse(provider).complete(chat(n=2))).body

    ChatCompletion.model_validate(built)
    sent = posted(upstream)[-1]
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert built["object"] == "chat.completion"
    assert built["id"].startswith("chatcmpl-")
    assert built["model"] == whole["model"]
    assert isinstance(built["created"], int)
    assert [
        (c["index"], c["message"]["content"], c["finish_reason"]) for c in built["choices"]
    ] == [(c["index"], c["message"]["content"], c["finish_reason"]) for c in whole["choices"]]
    assert built["usage"] == whole["usage"]


async def test_completions_batch_equals_the_non_streamed_answer(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    request = completion(["first prompt", "second one here"])
    whole = (await provider.complete(request)).body
    built = (await AggregatedResponse(provider).complete(request)).body

    Completion.model_validate(built)
    assert built["object"] == "text_completion"
    assert [(c["index"], c["text"], c["finish_reason"]) for c in built["choices"]] == [
        (c["index"], c["text"], c["finish_reason"]) for c in whole["choices"]
    ]
    assert built["usage"] == whole["usage"]


async def test_streaming_passes_through(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    chunks = [c async for c in AggregatedResponse(provider).stream(chat(stream=True))]
    assert len(chunks) > 3
    assert posted(upstream)[-1].get("stream_options") is None


async def test_a_backend_without_stream_usage_is_not_asked_for_it(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    built = (await AggregatedResponse(provider, usage=False).complete(chat())).body
    sent = posted(upstream)[-1]
    assert sent["stream"] is True
    assert "stream_options" not in sent
    assert built["usage"] is None
    assert built["choices"][0]["message"]["content"] == "echo: hello world"
