"""Emulations that need a declaration, through a real Turnout and the official openai SDK
against a loopback upstream declared without the option: suffix (FIM template, chat
instruction), chat on a completion-only backend (chat template), usage in streams counted
with the declared tokenizer, whole answers from a stream-only backend, echo with logprobs
through vLLM's prompt_logprobs, and token ids / logit_bias kept to deployments sharing the
primary deployment's tokenizer.

One Turnout serves every scenario as its own model, so the declared tokenizer is loaded
once for the module.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream, RecordedRequest
from tests.local_tokenizer import smollm2_tokenizer
from tests.turnout_server import RunningTurnout, simple_config

SMOL = "smollm2-135m-instruct"
OTHER = "all-minilm-l6-v2"  # a packaged tokenizer that is not SmolLM2's
MESSAGES: list[Any] = [{"role": "user", "content": "alpha beta gamma"}]


def _deployment(model: str, **declared: Any) -> dict[str, Any]:
    return {"provider": "up", "model": model, **declared}


SCENARIOS: dict[str, list[dict[str, Any]]] = {
    "fim": [_deployment("coder", fim="starcoder")],  # a template: suffix is Turnout's
    "no-fim": [_deployment("plain", capabilities={"suffix": False})],
    "chat-only": [_deployment("chatty", capabilities={"completions": False})],
    "completion-only": [_deployment("base", capabilities={"chat": False}, tokenizer=SMOL)],
    "completion-only-bare": [_deployment("base-bare", capabilities={"chat": False})],
    "no-usage": [_deployment("quiet", capabilities={"stream_options": False}, tokenizer=SMOL)],
    "no-usage-bare": [_deployment("quiet-bare", capabilities={"stream_options": False})],
    "stream-only": [_deployment("streamer", capabilities={"non_streaming": False})],
    "vllm": [_deployment("v", capabilities={"echo": False, "prompt_logprobs": True})],
    "tokens": [
        _deployment(
            "primary", capabilities={"logit_bias": False, "completions": False}, tokenizer=SMOL
        ),
        _deployment("stranger", tokenizer=OTHER),
        _deployment("sibling", tokenizer=SMOL),
    ],
    "tokens-none-left": [
        _deployment(
            "primary-2", capabilities={"logit_bias": False, "completions": False}, tokenizer=SMOL
        ),
        _deployment("stranger-2", tokenizer=OTHER),
    ],
    "tokens-drop": [
        _deployment("primary-3", capabilities={"chat": False}),
        _deployment("stranger-3", tokenizer=OTHER),
    ],
}


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIUpstream]:
    with FakeOpenAIUpstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def server(upstream: FakeOpenAIUpstream) -> Iterator[RunningTurnout]:
    smollm2_tokenizer()  # skips the module when the packaged model is absent
    models = {name: {"deployments": d} for name, d in SCENARIOS.items()}
    running = RunningTurnout(simple_config({"up": upstream.base_url}, models=models)).start()
    yield running
    running.stop()


@pytest.fixture
def client(server: RunningTurnout, upstream: FakeOpenAIUpstream) -> openai.OpenAI:
    upstream.reset()
    return server.client()


def sent(upstream: FakeOpenAIUpstream) -> list[RecordedRequest]:
    return [r for r in upstream.requests if r.method == "POST"]


def error_of(caught: pytest.ExceptionInfo[openai.BadRequestError]) -> dict[str, Any]:
    body = caught.value.body
    assert isinstance(body, dict)
    return body


# suffix


def test_suffix_goes_through_the_declared_fim_template(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    reply = client.completions.with_raw_response.create(
        model="fim", prompt="def f(", suffix="    return x", echo=True
    )
    request = sent(upstream)[0]
    filled = "<fim_prefix>def f(<fim_suffix>    return x<fim_middle>"
    assert request.json["prompt"] == filled
    assert not {"suffix", "echo"} & set(request.json)
    assert reply.headers["x-turnout-emulated"] == "suffix"
    # The echo is the caller's prompt, not the template.
    assert reply.parse().choices[0].text == "def f(" + "echo: " + filled


def test_suffix_streams_through_the_fim_template(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    chunks = list(
        client.completions.create(model="fim", prompt="a b", suffix="c", echo=True, stream=True)
    )
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == "a b" + "echo: <fim_prefix>a b<fim_suffix>c<fim_middle>"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_suffix_with_echo_and_logprobs_is_refused_on_a_template(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="fim", prompt="x", suffix="y", echo=True, logprobs=1)
    assert error_of(caught)["param"] == "echo"


def test_suffix_without_a_template_is_refused_naming_suffix(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="no-fim", prompt="x", suffix="y")
    assert error_of(caught)["param"] == "suffix"
    assert sent(upstream) == []


def test_suffix_on_a_chat_only_backend_becomes_an_instruction(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    reply = client.completions.with_raw_response.create(
        model="chat-only", prompt="The cat", suffix="on the mat."
    )
    messages = sent(upstream)[0].json["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[1]["content"] == "<before>The cat</before>\n<after>on the mat.</after>"
    assert reply.headers["x-turnout-emulated"] == "completions, suffix"
    assert reply.parse().choices[0].text.startswith("echo: <before>The cat")


# chat on a completion-only backend


def _rendered(messages: list[Any]) -> str:
    text = smollm2_tokenizer().apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    assert isinstance(text, str)
    return text


def test_chat_on_a_completion_only_backend_uses_the_chat_template(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    reply = client.chat.completions.with_raw_response.create(
        model="completion-only", messages=MESSAGES, max_completion_tokens=30
    )
    completion = reply.parse()
    request = sent(upstream)[0]
    assert request.path == "/v1/completions"
    assert request.json["prompt"] == _rendered(MESSAGES)
    assert request.json["max_tokens"] == 30
    assert "messages" not in request.json
    assert reply.headers["x-turnout-emulated"] == "chat"
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "echo: " + _rendered(MESSAGES)
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.total_tokens > 0


def test_chat_streams_on_a_completion_only_backend(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    chunks = list(
        client.chat.completions.create(
            model="completion-only",
            messages=MESSAGES,
            n=2,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    texts: dict[int, str] = {}
    roles: dict[int, list[str]] = {}
    finishes: dict[int, list[str]] = {}
    for chunk in chunks[:-1]:
        assert chunk.usage is None
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.delta.role:
                roles.setdefault(choice.index, []).append(choice.delta.role)
            if choice.finish_reason:
                finishes.setdefault(choice.index, []).append(choice.finish_reason)
    assert texts == {0: "echo: " + _rendered(MESSAGES), 1: "echo: " + _rendered(MESSAGES)}
    assert roles == {0: ["assistant"], 1: ["assistant"]}
    assert finishes == {0: ["stop"], 1: ["stop"]}
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None


def test_chat_with_tools_on_a_completion_only_backend_is_refused_unless_dropped(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    tools: Any = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="completion-only", messages=MESSAGES, tools=tools)
    assert error_of(caught)["param"] == "tools"
    assert sent(upstream) == []
    reply = client.chat.completions.with_raw_response.create(
        model="completion-only",
        messages=MESSAGES,
        tools=tools,
        extra_body={"router": {"translation": "drop"}},
    )
    assert reply.headers["x-turnout-dropped"] == "tools"
    assert "tools" not in sent(upstream)[0].json


def test_chat_on_a_completion_only_backend_needs_a_declared_tokenizer(
    client: openai.OpenAI,
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="completion-only-bare", messages=MESSAGES)
    error = error_of(caught)
    assert error["param"] == "model"
    assert "tokenizer" in error["message"]


# usage in streams


def test_stream_usage_is_counted_with_the_declared_tokenizer(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    response = client.chat.completions.with_raw_response.create(
        model="no-usage", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(response.parse())
    assert response.headers["x-turnout-emulated"] == "stream_options.include_usage"
    assert "stream_options" not in sent(upstream)[0].json
    assert all(c.usage is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    tokenizer = smollm2_tokenizer()
    text = "echo: alpha beta gamma"
    assert last.usage.prompt_tokens == len(tokenizer.encode(_rendered(MESSAGES)))
    assert last.usage.completion_tokens == len(tokenizer.encode(text))
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens


def test_completions_stream_usage_is_counted_too(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    chunks = list(
        client.completions.create(
            model="no-usage",
            prompt=["one two", "three"],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    usage = chunks[-1].usage
    assert usage is not None
    tokenizer = smollm2_tokenizer()
    assert usage.prompt_tokens == len(tokenizer.encode("one two")) + len(tokenizer.encode("three"))
    generated = ["echo: one two", "echo: three"]
    assert usage.completion_tokens == sum(len(tokenizer.encode(t)) for t in generated)


def test_stream_usage_without_a_tokenizer_is_dropped_and_said(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    response = client.chat.completions.with_raw_response.create(
        model="no-usage-bare",
        messages=MESSAGES,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(response.parse())
    assert response.headers["x-turnout-dropped"] == "stream_options.include_usage"
    assert all(c.choices for c in chunks)  # no usage chunk: none was counted
    assert "stream_options" not in sent(upstream)[0].json
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="no-usage-bare",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"router": {"translation": "strict"}},
        )
    assert error_of(caught)["param"] == "stream_options.include_usage"


# stream-only backends


def test_a_whole_answer_is_assembled_from_a_stream_only_backend(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    reply = client.chat.completions.with_raw_response.create(
        model="stream-only", messages=MESSAGES, n=2
    )
    completion = reply.parse()
    assert reply.headers["x-turnout-emulated"] == "non_streaming"
    request = sent(upstream)[0].json
    assert request["stream"] is True
    assert request["stream_options"] == {"include_usage": True}
    assert [(c.index, c.message.content, c.finish_reason) for c in completion.choices] == [
        (0, "echo: alpha beta gamma", "stop"),
        (1, "echo: alpha beta gamma", "stop"),
    ]
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 8
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="stream-only", messages=MESSAGES, extra_body={"router": {"translation": "strict"}}
        )
    assert error_of(caught)["param"] == "stream"


# echo with logprobs through vLLM's prompt_logprobs


def test_echo_with_logprobs_comes_from_prompt_logprobs(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    prompt = "the quick fox"
    reply = client.completions.with_raw_response.create(
        model="vllm", prompt=prompt, echo=True, logprobs=2, max_tokens=5
    )
    request = sent(upstream)[0].json
    assert request["prompt_logprobs"] == 2
    assert "echo" not in request
    assert reply.headers["x-turnout-emulated"] == "echo"
    choice = reply.parse().choices[0]
    answer = "echo: the quick fox"
    assert choice.text == prompt + answer
    logprobs = choice.logprobs
    assert logprobs is not None
    assert logprobs.tokens is not None
    assert logprobs.tokens == ["the", " quick", " fox", "echo:", " the", " quick", " fox"]
    assert logprobs.token_logprobs is not None
    assert logprobs.top_logprobs is not None
    assert logprobs.token_logprobs[0] is None
    assert logprobs.top_logprobs[0] is None
    assert all(isinstance(v, float) for v in logprobs.token_logprobs[1:])
    assert logprobs.text_offset == [0, 3, 9, 13, 18, 22, 28]
    for token, value, top in zip(
        logprobs.tokens[1:], logprobs.token_logprobs[1:], logprobs.top_logprobs[1:], strict=True
    ):
        assert top[token] == value  # the actual token is always listed
        assert len(top) <= 3  # up to logprobs + 1
    assert "prompt_logprobs" not in reply.http_response.json()["choices"][0]


def test_echo_with_logprobs_streams_as_one_replayed_answer(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    chunks = list(
        client.completions.create(model="vllm", prompt="a b", echo=True, logprobs=0, stream=True)
    )
    assert "".join(c.choices[0].text for c in chunks) == "a b" + "echo: a b"
    assert "stream" not in sent(upstream)[0].json


# token ids and logit_bias


def test_logit_bias_goes_only_to_a_deployment_sharing_the_primary_tokenizer(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    reply = client.chat.completions.with_raw_response.create(
        model="tokens", messages=MESSAGES, logit_bias={"42": 5}
    )
    assert reply.headers["x-turnout-deployment"] == "up/sibling"
    assert [r.json["model"] for r in sent(upstream)] == ["sibling"]
    assert sent(upstream)[0].json["logit_bias"] == {"42": 5}


def test_token_id_prompts_go_only_to_a_deployment_sharing_the_primary_tokenizer(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    reply = client.completions.with_raw_response.create(model="tokens", prompt=[1, 2, 3])
    assert reply.headers["x-turnout-deployment"] == "up/sibling"
    assert [r.json["prompt"] for r in sent(upstream)] == [[1, 2, 3]]


@pytest.mark.parametrize(
    ("extra", "param"),
    [({"logit_bias": {"7": 1}}, "logit_bias"), ({"prompt": [[1], [2]]}, "prompt")],
)
def test_with_no_deployment_sharing_the_tokenizer_the_400_names_the_option(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream, extra: dict[str, Any], param: str
) -> None:
    body: dict[str, Any] = {"prompt": "x", **extra}
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="tokens-none-left", **body)
    assert error_of(caught)["param"] == param
    assert sent(upstream) == []


def test_drop_mode_drops_logit_bias_where_the_tokenizer_differs(
    client: openai.OpenAI, upstream: FakeOpenAIUpstream
) -> None:
    # primary-3 serves no chat and declares no tokenizer to render one: skipped even here.
    reply = client.chat.completions.with_raw_response.create(
        model="tokens-drop",
        messages=MESSAGES,
        logit_bias={"7": 1},
        extra_body={"router": {"translation": "drop"}},
    )
    assert reply.headers["x-turnout-deployment"] == "up/stranger-3"
    assert reply.headers["x-turnout-dropped"] == "logit_bias"
    assert "logit_bias" not in sent(upstream)[0].json
