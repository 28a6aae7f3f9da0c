from __future__ import annotations

import json

import pytest

from providers.emulation import EchoEmulation, PromptLogprobsEcho
from providers.emulation.prompt_logprobs import echo_logprobs
from providers.errors import UpstreamError
from providers.openai.adapter import OpenAIProvider
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Status

from .conftest import completion, posted

# vLLM's shape: one entry per prompt token, None first; the prompt's own token first in
# each dict, then the top k by rank (a duplicate keeps the first place).
PROMPT_LOGPROBS = [
    None,
    {
        "318": {"logprob": -1.5, "rank": 2, "decoded_token": " is"},
        "11": {"logprob": -0.3, "rank": 1, "decoded_token": ","},
    },
    {"1049": {"logprob": -0.2, "rank": 1, "decoded_token": " it"}},
]


def test_prompt_logprobs_become_the_front_of_the_completion_logprobs() -> None:
    completion_part = {
        "tokens": ["?", " yes"],
        "token_logprobs": [-0.1, -0.7],
        "top_logprobs": [{"?": -0.1}, {" yes": -0.7}],
        "text_offset": [0, 1],
    }
    merged = echo_logprobs("What is it", PROMPT_LOGPROBS, completion_part)
    assert merged == {
        "tokens": ["What", " is", " it", "?", " yes"],
        "token_logprobs": [None, -1.5, -0.2, -0.1, -0.7],
        "top_logprobs": [
            None,
            {" is": -1.5, ",": -0.3},
            {" it": -0.2},
            {"?": -0.1},
            {" yes": -0.7},
        ],
        "text_offset": [0, 4, 7, 10, 11],
    }


def test_offsets_of_a_completion_counted_from_the_prompt_start_are_moved_too() -> None:
    part = {"tokens": ["!"], "token_logprobs": [-1.0], "top_logprobs": [{}], "text_offset": [10]}
    assert echo_logprobs("What is it", PROMPT_LOGPROBS, part)["text_offset"][-1] == 10


def test_a_first_token_the_rest_does_not_explain_is_left_empty() -> None:
    merged = echo_logprobs("Something else", PROMPT_LOGPROBS, None)
    assert merged["tokens"] == ["", " is", " it"]
    assert merged["token_logprobs"] == [None, -1.5, -0.2]


async def test_each_choice_echoes_its_own_prompt_with_its_logprobs(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    request = completion(["a b c", "d e"], echo=True, logprobs=1, n=2)
    body = (await PromptLogprobsEcho(provider).complete(request)).body
    # Not Completion.model_validate: the SDK types the first entries (null) as numbers.
    sent = posted(upstream)[0]
    assert (sent["prompt_logprobs"], "echo" in sent) == (1, False)
    for choice in body["choices"]:
        prompt = ["a b c", "d e"][choice["index"] // 2]
        assert choice["text"] == prompt + "echo: " + prompt
        logprobs = choice["logprobs"]
        assert "".join(logprobs["tokens"]) == choice["text"]
        assert logprobs["token_logprobs"][0] is None
        assert logprobs["top_logprobs"][0] is None
        starts = [0]
        for token in logprobs["tokens"][:-1]:
            starts.append(starts[-1] + len(token))
        assert logprobs["text_offset"] == starts
        assert "prompt_logprobs" not in choice


async def test_a_stream_is_one_whole_call_replayed(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    request = completion("x y", echo=True, logprobs=0, stream=True)
    chunks = [c async for c in PromptLogprobsEcho(provider).stream(request)]
    assert "stream" not in posted(upstream)[0]
    assert "".join(c["choices"][0]["text"] for c in chunks) == "x y" + "echo: x y"
    assert chunks[0]["choices"][0]["logprobs"]["tokens"][:2] == ["x", " y"]


async def test_echo_without_logprobs_is_left_to_the_plain_emulation(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    wrapper = PromptLogprobsEcho(EchoEmulation(provider))
    body = (await wrapper.complete(completion("hi", echo=True))).body
    assert "prompt_logprobs" not in posted(upstream)[0]
    assert body["choices"][0]["text"] == "hi" + "echo: hi"


async def test_a_backend_that_returns_no_prompt_logprobs_is_a_protocol_error(
    provider: OpenAIProvider, upstream: FakeOpenAIUpstream
) -> None:
    answer = {"id": "c", "object": "text_completion", "created": 1, "model": "m"}
    answer["choices"] = [{"index": 0, "text": "x", "logprobs": None, "finish_reason": "stop"}]
    upstream.enqueue(Status(200, body=json.dumps(answer).encode()))
    with pytest.raises(UpstreamError, match="prompt_logprobs"):
        await PromptLogprobsEcho(provider).complete(completion("hi", echo=True, logprobs=1))
