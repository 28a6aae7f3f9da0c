"""GenerationRequest: defaults, normalized shapes, and 400s that name the parameter."""

from __future__ import annotations

from typing import Any

import pytest

from providers.errors import UpstreamError
from providers.local.params import GenerationRequest
from providers.local.runner import RowSampling


def _completions(**fields: Any) -> GenerationRequest:
    return GenerationRequest.from_completions({"model": "m", "prompt": "Hi", **fields})


def _chat(**fields: Any) -> GenerationRequest:
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], **fields}
    return GenerationRequest.from_chat(body)


def _rejected(parse: Any, **fields: Any) -> UpstreamError:
    with pytest.raises(UpstreamError) as caught:
        parse(**fields)
    error = caught.value
    assert (error.status, error.type) == (400, "invalid_request_error")
    return error


def test_completions_defaults() -> None:
    request = _completions()
    assert request.kind == "completions"
    assert request.prompts == ("Hi",)
    assert (request.max_tokens, request.n, request.best_of) == (16, 1, 1)
    assert (request.temperature, request.top_p) == (1.0, 1.0)
    assert request.stop == ()
    assert request.logprobs is None
    assert not request.echo
    assert not request.stream
    assert not request.include_usage
    assert request.suffix is None
    assert request.seed is None


def test_explicit_nulls_mean_defaults() -> None:
    request = _completions(max_tokens=None, n=None, temperature=None, stop=None, logprobs=None)
    assert (request.max_tokens, request.n, request.temperature) == (16, 1, 1.0)
    assert request.stop == ()
    assert request.logprobs is None


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("text", ("text",)),
        (["a", "b"], ("a", "b")),
        ([1, 2, 3], ((1, 2, 3),)),
        ([[1, 2], [3]], ((1, 2), (3,))),
        ("", ("",)),
    ],
)
def test_prompt_shapes(prompt: Any, expected: tuple[Any, ...]) -> None:
    assert _completions(prompt=prompt).prompts == expected


@pytest.mark.parametrize("prompt", [[], [[]], [1, "a"], None])
def test_bad_prompts_name_prompt(prompt: Any) -> None:
    assert _rejected(_completions, prompt=prompt).param == "prompt"


def test_completions_fields() -> None:
    request = _completions(
        max_tokens=5,
        n=2,
        best_of=3,
        temperature=0.5,
        top_p=0.9,
        stop="\n",
        seed=7,
        logit_bias={"50256": -100, "13": 2.5},
        frequency_penalty=0.5,
        presence_penalty=-0.25,
        logprobs=3,
        echo=True,
        suffix="end",
        user="u1",
    )
    assert (request.max_tokens, request.n, request.best_of) == (5, 2, 3)
    assert request.stop == ("\n",)
    assert request.logit_bias == {50256: -100.0, 13: 2.5}
    assert (request.logprobs, request.echo, request.suffix, request.user) == (3, True, "end", "u1")
    assert _completions(logprobs=0).logprobs == 0
    assert _completions(stop=["a", "b", "c", "d", "e"]).stop == ("a", "b", "c", "d", "e")
    assert _completions(suffix="").suffix is None


def test_best_of_rules() -> None:
    assert _completions(n=3).best_of == 3
    assert _rejected(_completions, n=3, best_of=2).param == "best_of"
    assert _rejected(_completions, best_of=2, stream=True).param == "best_of"
    assert _completions(n=2, best_of=2, stream=True).stream  # nothing to rank: fine


def test_bad_logit_bias_key() -> None:
    assert _rejected(_completions, logit_bias={"hello": 1}).param == "logit_bias"


def test_stream_options() -> None:
    assert _completions(stream=True, stream_options={"include_usage": True}).include_usage
    assert not _completions(stream=True).include_usage
    assert not _completions(stream_options={"include_usage": True}).include_usage


def test_row_sampling_seeds_each_candidate() -> None:
    request = _completions(
        n=3, seed=100, temperature=0.7, top_p=0.8, logit_bias={"5": 1}, logprobs=2
    )
    rows = [request.row_sampling(i) for i in range(3)]
    assert [row.seed for row in rows] == [100, 101, 102]
    assert rows[0] == RowSampling(
        temperature=0.7, top_p=0.8, logit_bias={5: 1.0}, seed=100, top_logprobs=2
    )
    rows[0].logit_bias[9] = 1.0  # each row owns its settings
    assert rows[1].logit_bias == {5: 1.0}
    assert _completions().row_sampling(4).seed is None
    assert _completions(frequency_penalty=1, presence_penalty=2).row_sampling(0) == RowSampling(
        frequency_penalty=1.0, presence_penalty=2.0
    )


def test_check_vocab() -> None:
    _completions(prompt=[1, 2], logit_bias={"3": 1}).check_vocab(10)
    assert _rejected(_completions(logit_bias={"10": 1}).check_vocab, vocab_size=10).param == (
        "logit_bias"
    )
    assert _rejected(_completions(prompt=[[1], [12]]).check_vocab, vocab_size=10).param == (
        "prompt"
    )


def test_chat_defaults_and_fields() -> None:
    request = _chat()
    assert request.kind == "chat"
    assert request.messages == ({"role": "user", "content": "Hi"},)
    assert request.max_tokens is None  # up to the context window
    assert (request.n, request.best_of, request.logprobs, request.tools) == (1, 1, None, None)
    assert _chat(max_tokens=9).max_tokens == 9
    assert _chat(max_tokens=9, max_completion_tokens=4).max_tokens == 4
    assert _chat(logprobs=True).logprobs == 0
    assert _chat(logprobs=True, top_logprobs=5).logprobs == 5
    assert _chat(logprobs=False).logprobs is None
    assert _chat(n=4, seed=1).row_sampling(3).seed == 4


def test_chat_tools() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {}}}
    request = _chat(tools=[tool], tool_choice="required")
    assert request.tools == (tool,)
    assert request.tool_choice == "required"
    function = {"name": "g", "parameters": {}}
    legacy = _chat(functions=[function], function_call={"name": "g"})
    assert legacy.tools == ({"type": "function", "function": function},)
    assert legacy.tool_choice == {"type": "function", "function": {"name": "g"}}


def test_chat_rejections_name_the_param() -> None:
    assert _rejected(_chat, top_logprobs=3).param == "top_logprobs"
    json_mode = {"type": "json_object"}
    assert _rejected(_chat, response_format=json_mode).param == "response_format"
    assert _chat(response_format={"type": "text"}).kind == "chat"
    assert _rejected(_chat, messages=[]).param == "messages"
