"""The fake upstream's vLLM-shaped logprobs: completions `logprobs` and `prompt_logprobs`."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from .openai_upstream import FakeOpenAIUpstream
from .test_openai_upstream import sse_data


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with FakeOpenAIUpstream() as up, httpx.Client(base_url=up.base_url, timeout=5) as c:
        yield c


def test_prompt_logprobs_ride_on_each_choice_as_vllm_sends_them(client: httpx.Client) -> None:
    body = {"model": "m", "prompt": ["a b c", "d e"], "n": 2, "prompt_logprobs": 1}
    choices = client.post("/completions", json=body).json()["choices"]
    assert len(choices) == 4
    for choice in choices:
        entries = choice["prompt_logprobs"]
        pieces = ["a", " b", " c"] if choice["index"] < 2 else ["d", " e"]
        assert len(entries) == len(pieces)
        assert entries[0] is None
        for position, (entry, piece) in enumerate(zip(entries[1:], pieces[1:], strict=True), 1):
            first = next(iter(entry.values()))
            assert first["decoded_token"] == piece  # the prompt's own token comes first
            assert all(key.isdigit() for key in entry)
            assert len(entry) <= 2  # the token itself, and the top 1
            ranks = sorted(v["rank"] for v in entry.values())
            assert ranks[0] == 1
            if position % 2:
                assert first["rank"] == 2  # below the one alternative listed


def test_completion_logprobs_list_the_sampled_token_and_the_top_k(client: httpx.Client) -> None:
    body = {"model": "m", "prompt": "x y", "logprobs": 2}
    logprobs = client.post("/completions", json=body).json()["choices"][0]["logprobs"]
    assert logprobs["tokens"] == ["echo:", " x", " y"]
    assert logprobs["text_offset"] == [0, 5, 7]
    for token, value, top in zip(
        logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"], strict=True
    ):
        assert top[token] == value
        assert 2 <= len(top) <= 3


def test_streamed_logprobs_continue_their_offsets(client: httpx.Client) -> None:
    body = {"model": "m", "prompt": "x y", "logprobs": 0, "stream": True}
    events = sse_data(client.post("/completions", json=body).content)
    chunks = [json.loads(e) for e in events[:-1]]
    offsets = [
        c["choices"][0]["logprobs"]["text_offset"] for c in chunks if c["choices"][0]["text"]
    ]
    assert offsets == [[0], [5], [7]]


def test_prompt_logprobs_with_stream_are_refused_like_vllm(client: httpx.Client) -> None:
    body = {"model": "m", "prompt": "x", "prompt_logprobs": 1, "stream": True}
    response = client.post("/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "prompt_logprobs"
    assert error["message"] == "`prompt_logprobs` are not available when `stream=True`."


def test_chat_prompt_logprobs_are_top_level(client: httpx.Client) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi there"}],
        "prompt_logprobs": 0,
    }
    answer = client.post("/chat/completions", json=body).json()
    assert answer["prompt_logprobs"][0] is None
    assert [next(iter(e.values()))["decoded_token"] for e in answer["prompt_logprobs"][1:]] == [
        " there"
    ]
    assert "prompt_logprobs" not in answer["choices"][0]
