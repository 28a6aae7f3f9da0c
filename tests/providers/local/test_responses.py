"""Response builders and logprobs, checked against the openai SDK's own pydantic types."""

from __future__ import annotations

import math
import re
from typing import Any

import orjson
import pytest

from providers.local.logprobs import LOGPROB_FLOOR, LogprobsAccumulator
from providers.local.responses import (
    ChatStream,
    CompletionStream,
    StreamHeader,
    chat_choice,
    chat_completion_id,
    chat_response,
    completion_choice,
    completion_id,
    completion_response,
    usage,
)
from providers.local.runner import PromptScores, Sampled
from providers.local.tokenizer import TokenizerAdapter
from tests.local_tokenizer import smollm2_tokenizer

openai_types = pytest.importorskip("openai.types")
chat_types = pytest.importorskip("openai.types.chat")


@pytest.fixture(scope="module")
def smol() -> TokenizerAdapter:
    return TokenizerAdapter(smollm2_tokenizer())


def _generate(
    adapter: TokenizerAdapter, text: str, accumulator: LogprobsAccumulator, top: int = 2
) -> list[int]:
    """Feed `text`'s tokens as if sampled, with made-up logprobs and alternatives."""
    ids = adapter.encode_text(text)
    for position, token in enumerate(ids):
        alternatives = tuple((100 + position + k, -1.0 - k) for k in range(top))
        accumulator.add_sampled(Sampled(token, -0.5 - position, alternatives))
    return ids


def _round_trip(body: dict[str, Any]) -> dict[str, Any]:
    decoded: dict[str, Any] = orjson.loads(orjson.dumps(body))
    return decoded


def _sdk_completion(body: dict[str, Any]) -> Any:
    """Parse as openai-python does by default (lenient `construct`), and validate strictly
    all but the two nulls its types omit though the API sends them: `finish_reason` in a
    stream chunk, and the first echoed prompt token's logprobs (as vLLM sends them)."""
    data = _round_trip(body)
    strict = _round_trip(body)
    for choice in strict["choices"]:
        choice["finish_reason"] = choice["finish_reason"] or "stop"
        logprobs = choice["logprobs"]
        if logprobs and logprobs["token_logprobs"] and logprobs["token_logprobs"][0] is None:
            for key in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
                del logprobs[key][0]
    openai_types.Completion.model_validate(strict)
    return openai_types.Completion.construct(**data)


def test_ids() -> None:
    assert re.fullmatch(r"cmpl-[0-9a-f]{32}", completion_id())
    assert re.fullmatch(r"chatcmpl-[0-9a-f]{32}", chat_completion_id())
    assert completion_id() != completion_id()
    assert usage(3, 4) == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def test_completion_with_logprobs(smol: TokenizerAdapter) -> None:
    accumulator = LogprobsAccumulator(smol, prefix_ids=smol.encode_text("The capital is"))
    ids = _generate(smol, " Paris.", accumulator)
    logprobs = accumulator.completion_logprobs()
    assert logprobs["tokens"] == [" Paris", "."]
    assert logprobs["token_logprobs"] == [-0.5, -1.5]
    assert logprobs["text_offset"] == [0, 6]
    first = logprobs["top_logprobs"][0]
    assert list(first.values()) == [-1.0, -2.0, -0.5]  # the top 2, then the sampled token
    assert smol.token_text(ids[0]) in first
    choice = completion_choice(0, " Paris.", "stop", logprobs)
    body = completion_response("cmpl-1", 1700000000, "smollm2", [choice], usage(3, 2))
    parsed = openai_types.Completion.model_validate(_round_trip(body))
    assert parsed.choices[0].logprobs.tokens == [" Paris", "."]
    assert _sdk_completion(body).choices[0].logprobs.text_offset == [0, 6]
    assert parsed.usage.total_tokens == 5
    assert body["object"] == "text_completion"


def test_echo_logprobs_cover_the_prompt(smol: TokenizerAdapter) -> None:
    prompt = "Hi there"
    prompt_ids = smol.encode_text(prompt)
    scores = PromptScores(
        logprobs=(None, *(-2.0 for _ in prompt_ids[1:])),
        top=(None, *(((7, -0.1),) for _ in prompt_ids[1:])),
    )
    accumulator = LogprobsAccumulator(smol)
    accumulator.add_prompt(prompt_ids, scores, prompt)
    _generate(smol, " you", accumulator, top=1)
    logprobs = accumulator.completion_logprobs()
    assert logprobs["tokens"] == ["Hi", " there", " you"]
    assert logprobs["token_logprobs"][0] is None
    assert logprobs["top_logprobs"][0] is None
    assert logprobs["text_offset"] == [0, 2, 8]
    choice = completion_choice(0, prompt + " you", "length", logprobs)
    body = completion_response("cmpl-2", 1, "m", [choice], usage(2, 1))
    parsed = _sdk_completion(body).choices[0]
    assert parsed.text == "Hi there you"
    assert parsed.logprobs.token_logprobs[:2] == [None, -2.0]
    with pytest.raises(ValueError, match="before"):
        accumulator.add_prompt(prompt_ids, scores, prompt)


def test_text_offsets_with_multibyte_characters(smol: TokenizerAdapter) -> None:
    accumulator = LogprobsAccumulator(smol)
    text = "é日本 😀!"
    ids = _generate(smol, text, accumulator, top=0)
    offsets = accumulator.completion_logprobs()["text_offset"]
    assert len(offsets) == len(ids)
    assert offsets == sorted(offsets)
    assert offsets[-1] == text.index("!")
    # Every offset is where its token's first complete character begins or continues.
    assert all(0 <= offset < len(text) for offset in offsets)


def test_chat_response_with_logprobs(smol: TokenizerAdapter) -> None:
    accumulator = LogprobsAccumulator(smol)
    _generate(smol, "Paris 😀", accumulator, top=2)
    logprobs = accumulator.chat_logprobs()
    assert logprobs["refusal"] is None
    entries = logprobs["content"]
    assert entries[0]["token"] == "Paris"
    assert entries[0]["bytes"] == list(b"Paris")
    assert [alt["logprob"] for alt in entries[0]["top_logprobs"]] == [-1.0, -2.0]
    assert b"".join(bytes(entry["bytes"]) for entry in entries) == "Paris 😀".encode()
    choice = chat_choice(0, "Paris 😀", "stop", logprobs)
    body = chat_response("chatcmpl-1", 1, "m", [choice], usage(10, len(entries)))
    parsed = chat_types.ChatCompletion.model_validate(_round_trip(body))
    message = parsed.choices[0].message
    assert (message.role, message.content, message.refusal) == ("assistant", "Paris 😀", None)
    assert parsed.choices[0].logprobs.content[0].bytes == list(b"Paris")


def test_tool_calls_in_message() -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    body = chat_response("chatcmpl-3", 1, "m", [chat_choice(0, None, "tool_calls", None, [call])],
                         usage(1, 1))  # fmt: skip
    parsed = chat_types.ChatCompletion.model_validate(body)
    assert parsed.choices[0].message.tool_calls[0].function.name == "f"
    assert "tool_calls" not in chat_choice(0, "x", "stop")["message"]


def test_infinite_logprobs_are_clamped(smol: TokenizerAdapter) -> None:
    accumulator = LogprobsAccumulator(smol)
    accumulator.add(5, -math.inf, ((6, -math.inf),))
    completion = accumulator.completion_logprobs()
    assert completion["token_logprobs"] == [LOGPROB_FLOOR]
    chat = accumulator.chat_logprobs()
    assert chat["content"][0]["top_logprobs"][0]["logprob"] == LOGPROB_FLOOR
    orjson.dumps(completion)


def _check_chat_stream(chunks: list[dict[str, Any]], include_usage: bool) -> None:
    for chunk in chunks:
        chat_types.ChatCompletionChunk.model_validate(_round_trip(chunk))
    assert len({(chunk["id"], chunk["created"]) for chunk in chunks}) == 1
    choices = [choice for chunk in chunks for choice in chunk["choices"]]
    for index in {choice["index"] for choice in choices}:
        mine = [choice for choice in choices if choice["index"] == index]
        assert mine[0]["delta"] == {"role": "assistant", "content": ""}
        assert [c["finish_reason"] for c in mine if c["finish_reason"]] == [
            mine[-1]["finish_reason"]
        ]
    if include_usage:
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["total_tokens"] > 0
        assert all(chunk["usage"] is None for chunk in chunks[:-1])
    else:
        assert all("usage" not in chunk and chunk["choices"] for chunk in chunks)


@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_stream(smol: TokenizerAdapter, include_usage: bool) -> None:
    stream = ChatStream(StreamHeader("chatcmpl-9", 5, "m", include_usage))
    accumulator = LogprobsAccumulator(smol)
    _generate(smol, "Hi", accumulator, top=1)
    chunks = [
        *stream.delta(0, "Hi", accumulator.chat_logprobs(0, 1)),
        *stream.delta(1, ""),  # nothing to say yet: the role chunk only
        *stream.delta(0, ""),  # nothing at all
        *stream.delta(1, "Yo"),
        *stream.finish(1, "length"),
        *stream.finish(0, "stop", "!"),
        *stream.usage(usage(4, 3)),
    ]
    assert len(chunks) == 6 + include_usage
    _check_chat_stream(chunks, include_usage)
    assert chunks[-1 - include_usage]["choices"][0]["delta"] == {"content": "!"}
    assert chunks[-2 - include_usage]["choices"][0]["delta"] == {}
    with pytest.raises(ValueError, match="finish_reason"):
        stream.delta(0, "late")


def test_chat_stream_finish_without_content_still_sends_the_role() -> None:
    stream = ChatStream(StreamHeader("chatcmpl-8", 5, "m"))
    chunks = stream.finish(0, "length")
    _check_chat_stream(chunks, include_usage=False)
    assert len(chunks) == 2


def test_chat_stream_tool_call_fragments() -> None:
    stream = ChatStream(StreamHeader("chatcmpl-7", 5, "m"))
    first = {"index": 0, "id": "call_1", "type": "function",
             "function": {"name": "f", "arguments": ""}}  # fmt: skip
    chunks = [
        *stream.tool_call_delta(0, [first]),
        *stream.tool_call_delta(0, [{"index": 0, "function": {"arguments": '{"a": 1}'}}]),
        *stream.finish(0, "tool_calls"),
    ]
    _check_chat_stream(chunks, include_usage=False)


@pytest.mark.parametrize("include_usage", [False, True])
def test_completion_stream(smol: TokenizerAdapter, include_usage: bool) -> None:
    stream = CompletionStream(StreamHeader("cmpl-9", 5, "m", include_usage))
    accumulator = LogprobsAccumulator(smol)
    _generate(smol, " Paris is", accumulator, top=1)
    chunks = [
        *stream.delta(0, " Paris", accumulator.completion_logprobs(0, 1)),
        *stream.delta(0, ""),
        *stream.finish(0, "length", " is", accumulator.completion_logprobs(1)),
        *stream.usage(usage(2, 2)),
    ]
    assert len(chunks) == 2 + include_usage
    for chunk in chunks:
        _sdk_completion(chunk)
    assert [chunk["choices"][0]["text"] for chunk in chunks[:2]] == [" Paris", " is"]
    assert chunks[1]["choices"][0]["logprobs"]["text_offset"] == [6]
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks[:2]] == [None, "length"]
    if include_usage:
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["total_tokens"] == 4
        assert chunks[0]["usage"] is None
    else:
        assert all("usage" not in chunk for chunk in chunks)
    with pytest.raises(ValueError, match="finish_reason"):
        stream.finish(0, "stop")
