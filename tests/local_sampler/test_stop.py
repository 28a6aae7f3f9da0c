"""Stop strings that span token boundaries, whole and streamed, completions and chat."""

from __future__ import annotations

from collections.abc import Sequence

import openai

from tests.local_sampler.conftest import CHAT_MODEL
from tests.local_sampler.prompts import FRANCE, STORY


def spanning_stop(
    text: str, tokens: Sequence[str], offsets: Sequence[int], *, whole_first: bool = False
) -> str:
    """Two characters either side of a token boundary (or the whole token before it and two
    after), found nowhere earlier in `text`."""
    for index in range(2, len(tokens)):
        boundary = offsets[index]
        before = len(tokens[index - 1]) if whole_first else 2
        stop = text[boundary - before : boundary + 2]
        if (
            len(tokens[index - 1]) >= 2
            and len(tokens[index]) >= 2
            and stop.strip()
            and text.find(stop) == boundary - before
        ):
            return stop
    raise AssertionError(f"no token boundary to stop at in {tokens}")


def test_completions_stop_spanning_two_tokens(client: openai.OpenAI) -> None:
    greedy = client.completions.create(
        model=CHAT_MODEL, prompt=STORY, max_tokens=16, temperature=0, logprobs=0
    ).choices[0]
    assert greedy.logprobs is not None
    tokens, offsets = greedy.logprobs.tokens, greedy.logprobs.text_offset
    assert tokens is not None
    assert offsets is not None
    stop = spanning_stop(greedy.text, tokens, offsets)
    expected = greedy.text[: greedy.text.find(stop)]

    stopped = client.completions.create(
        model=CHAT_MODEL, prompt=STORY, max_tokens=16, temperature=0, stop=[stop, "@@@"]
    ).choices[0]
    assert (stopped.text, stopped.finish_reason) == (expected, "stop")

    stream = client.completions.create(
        model=CHAT_MODEL, prompt=STORY, max_tokens=16, temperature=0, stop=stop, stream=True
    )
    chunks = [chunk.choices[0] for chunk in stream if chunk.choices]
    assert "".join(chunk.text for chunk in chunks) == expected
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]


def test_chat_stop_spanning_two_tokens(client: openai.OpenAI) -> None:
    greedy = client.chat.completions.create(
        model=CHAT_MODEL, messages=FRANCE, max_tokens=16, temperature=0, logprobs=True
    ).choices[0]
    content = greedy.message.content
    assert content is not None
    assert greedy.logprobs is not None
    assert greedy.logprobs.content
    tokens = [entry.token for entry in greedy.logprobs.content]
    assert "".join(tokens) == content
    offsets = [sum(len(token) for token in tokens[:i]) for i in range(len(tokens))]
    stop = spanning_stop(content, tokens, offsets)
    expected = content[: content.find(stop)]

    stopped = client.chat.completions.create(
        model=CHAT_MODEL, messages=FRANCE, max_tokens=16, temperature=0, stop=[stop]
    ).choices[0]
    assert (stopped.message.content, stopped.finish_reason) == (expected, "stop")

    stream = client.chat.completions.create(
        model=CHAT_MODEL, messages=FRANCE, max_tokens=16, temperature=0, stop=stop, stream=True
    )
    chunks = [chunk.choices[0] for chunk in stream if chunk.choices]
    assert "".join(chunk.delta.content or "" for chunk in chunks) == expected
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]


def test_streamed_logprobs_stop_where_the_text_stops(client: openai.OpenAI) -> None:
    """A token held back as the possible start of a stop string, which the next token
    completes, is not in the answer: neither its text nor its logprobs are streamed."""
    settings = {"model": CHAT_MODEL, "prompt": STORY, "max_tokens": 16, "temperature": 0}
    greedy = client.completions.create(**settings, logprobs=0).choices[0]  # type: ignore[call-overload]
    assert greedy.logprobs is not None
    tokens, offsets = greedy.logprobs.tokens, greedy.logprobs.text_offset
    assert tokens is not None
    assert offsets is not None
    stop = spanning_stop(greedy.text, tokens, offsets, whole_first=True)

    whole = client.completions.create(**settings, logprobs=1, stop=stop).choices[0]  # type: ignore[call-overload]
    assert whole.logprobs is not None
    assert whole.logprobs.tokens is not None
    assert "".join(whole.logprobs.tokens) == whole.text == greedy.text[: greedy.text.find(stop)]

    stream = client.completions.create(**settings, logprobs=1, stop=stop, stream=True)  # type: ignore[call-overload]
    text, streamed_tokens, streamed_offsets = "", [], []
    for chunk in stream:
        for choice in chunk.choices:
            text += choice.text
            if choice.logprobs is not None:
                assert choice.logprobs.tokens is not None
                assert choice.logprobs.text_offset is not None
                streamed_tokens += choice.logprobs.tokens
                streamed_offsets += choice.logprobs.text_offset
    assert text == whole.text
    assert streamed_tokens == whole.logprobs.tokens
    assert streamed_offsets == whole.logprobs.text_offset


def test_streamed_chat_logprobs_equal_whole_ones(client: openai.OpenAI) -> None:
    greedy = client.chat.completions.create(
        model=CHAT_MODEL, messages=FRANCE, max_tokens=16, temperature=0, logprobs=True
    ).choices[0]
    content = greedy.message.content
    assert content is not None
    assert greedy.logprobs is not None
    assert greedy.logprobs.content
    tokens = [entry.token for entry in greedy.logprobs.content]
    offsets = [sum(len(token) for token in tokens[:i]) for i in range(len(tokens))]
    stop = spanning_stop(content, tokens, offsets, whole_first=True)
    settings = {"model": CHAT_MODEL, "messages": FRANCE, "max_tokens": 16, "temperature": 0}
    whole = client.chat.completions.create(**settings, logprobs=True, stop=stop).choices[0]  # type: ignore[call-overload]
    assert whole.logprobs is not None
    assert whole.logprobs.content is not None
    stream = client.chat.completions.create(**settings, logprobs=True, stop=stop, stream=True)  # type: ignore[call-overload]
    streamed = [
        entry.token
        for chunk in stream
        for choice in chunk.choices
        if choice.logprobs is not None and choice.logprobs.content
        for entry in choice.logprobs.content
    ]
    assert "".join(streamed) == whole.message.content == content[: content.find(stop)]
    assert streamed == [entry.token for entry in whole.logprobs.content]
