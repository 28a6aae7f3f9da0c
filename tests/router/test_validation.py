"""Request validation at the edge: every documented field and form is accepted and forwarded
intact; out-of-range values are answered 400 with the offending `param`.

Driven through the official SDK wherever it lets us send the value, raw httpx otherwise.
One Turnout and one fake upstream serve the whole module (the upstream is reset per test).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.turnout_server import RunningTurnout, simple_config

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "hello there"}]


@dataclass
class Gateway:
    upstream: FakeOpenAIUpstream
    turnout: RunningTurnout
    client: openai.OpenAI
    http: httpx.Client

    def forwarded(self) -> dict[str, Any]:
        """The JSON body the upstream received for the last request."""
        body = self.upstream.requests[-1].json
        assert isinstance(body, dict)
        return body

    def post(self, path: str, body: Any) -> httpx.Response:
        return self.http.post(path, json=body)


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    with FakeOpenAIUpstream() as up:
        turnout = RunningTurnout(simple_config({"a": up.base_url})).start()
        try:
            with turnout.client() as client, turnout.http() as http:
                yield Gateway(up, turnout, client, http)
        finally:
            turnout.stop()


@pytest.fixture(autouse=True)
def _fresh_upstream(gw: Gateway) -> None:
    gw.upstream.reset()


def bad_request(exc: pytest.ExceptionInfo[openai.BadRequestError]) -> dict[str, Any]:
    """The error object of a 400 the SDK raised, checked to be OpenAI's whole envelope."""
    response = exc.value.response
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert exc.value.body == error
    return dict(error)


def raw_error(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    return dict(error)


def call(gw: Gateway, endpoint: str, **kwargs: Any) -> Any:
    """One SDK call to the completions or the chat endpoint with a minimal valid body."""
    if endpoint == "completions":
        return gw.client.completions.create(model="m", prompt="hello there", **kwargs)
    return gw.client.chat.completions.create(model="m", messages=MESSAGES, **kwargs)  # type: ignore[arg-type]


def rejected(gw: Gateway, endpoint: str, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(openai.BadRequestError) as exc:
        call(gw, endpoint, **kwargs)
    assert not gw.upstream.requests, "a rejected request must not reach the upstream"
    return bad_request(exc)


def raw_path(endpoint: str) -> str:
    return {"completions": "/v1/completions", "chat": "/v1/chat/completions"}[endpoint]


def raw_base(endpoint: str) -> dict[str, Any]:
    if endpoint == "completions":
        return {"model": "m", "prompt": "hello there"}
    return {"model": "m", "messages": MESSAGES}


BOTH = pytest.mark.parametrize("endpoint", ["completions", "chat"])


# ---------------------------------------------------------------------------------------------
# /v1/completions
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt",
    ["say hi", ["first prompt", "second prompt"], [101, 102, 103], [[1, 2], [3], [4, 5, 6]]],
    ids=["string", "strings", "tokens", "token-lists"],
)
def test_completion_prompt_forms_are_forwarded_intact(gw: Gateway, prompt: Any) -> None:
    answer = gw.client.completions.create(model="m", prompt=prompt)
    assert gw.forwarded() == {"model": "a-model", "prompt": prompt}
    batch = 1 if isinstance(prompt, str) or isinstance(prompt[0], int) else len(prompt)
    assert len(answer.choices) == batch


@pytest.mark.parametrize(
    ("prompt", "param"),
    [
        ([-1], "prompt[0]"),
        ([[1], [-2]], "prompt[1][0]"),
        (5, "prompt"),
        (None, "prompt"),
        ([[]], "prompt[0]"),
        ({"text": "x"}, "prompt"),
    ],
    ids=repr,
)
def test_completion_prompt_of_no_documented_form_is_rejected(
    gw: Gateway, prompt: Any, param: str
) -> None:
    """The param names the offending element where there is one, as precisely as it can."""
    error = raw_error(gw.post("/v1/completions", {"model": "m", "prompt": prompt}))
    assert error["param"] == param
    assert not gw.upstream.requests


def test_completion_without_prompt_names_prompt(gw: Gateway) -> None:
    error = raw_error(gw.post("/v1/completions", {"model": "m"}))
    assert error["param"] == "prompt"
    assert error["code"] == "missing_required_parameter"


def test_completion_max_tokens_default_is_not_injected(gw: Gateway) -> None:
    gw.client.completions.create(model="m", prompt="hi")
    assert "max_tokens" not in gw.forwarded()
    gw.client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    assert "max_tokens" not in gw.forwarded()
    assert "max_completion_tokens" not in gw.forwarded()


def test_nothing_the_client_omitted_is_injected(gw: Gateway) -> None:
    gw.client.completions.create(model="m", prompt="hi", temperature=0.5)
    assert gw.forwarded() == {"model": "a-model", "prompt": "hi", "temperature": 0.5}
    gw.client.chat.completions.create(model="m", messages=MESSAGES)  # type: ignore[arg-type]
    assert gw.forwarded() == {"model": "a-model", "messages": MESSAGES}


@pytest.mark.parametrize("max_tokens", [0, 1, 16, 4096])
def test_completion_max_tokens_is_forwarded(gw: Gateway, max_tokens: int) -> None:
    gw.client.completions.create(model="m", prompt="hi", max_tokens=max_tokens)
    assert gw.forwarded()["max_tokens"] == max_tokens


def test_completion_negative_max_tokens_is_rejected(gw: Gateway) -> None:
    assert rejected(gw, "completions", max_tokens=-1)["param"] == "max_tokens"


@pytest.mark.parametrize(("best_of", "n"), [(1, None), (20, None), (2, 2), (5, 3), (20, 20)])
def test_completion_best_of_in_range_is_forwarded(gw: Gateway, best_of: int, n: int | None) -> None:
    kwargs: dict[str, Any] = {"best_of": best_of}
    if n is not None:
        kwargs["n"] = n
    call(gw, "completions", **kwargs)
    assert gw.forwarded()["best_of"] == best_of


@pytest.mark.parametrize(
    ("best_of", "n"), [(0, None), (21, None), (-1, None), (1, 2), (3, 4)], ids=str
)
def test_completion_best_of_out_of_range_or_below_n_is_rejected(
    gw: Gateway, best_of: int, n: int | None
) -> None:
    kwargs: dict[str, Any] = {"best_of": best_of}
    if n is not None:
        kwargs["n"] = n
    assert rejected(gw, "completions", **kwargs)["param"] == "best_of"


@pytest.mark.parametrize("best_of", [2, 20])
def test_completion_best_of_above_one_cannot_stream(gw: Gateway, best_of: int) -> None:
    error = rejected(gw, "completions", best_of=best_of, stream=True)
    assert error["param"] == "best_of"
    assert "stream" in error["message"]


def test_completion_best_of_one_may_stream(gw: Gateway) -> None:
    chunks = list(call(gw, "completions", best_of=1, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "echo: hello there"
    assert gw.forwarded()["best_of"] == 1


@pytest.mark.parametrize("echo", [True, False])
def test_completion_echo_is_forwarded(gw: Gateway, echo: bool) -> None:
    call(gw, "completions", echo=echo)
    assert gw.forwarded()["echo"] is echo


def test_completion_echo_must_be_a_boolean(gw: Gateway) -> None:
    error = raw_error(gw.post("/v1/completions", {**raw_base("completions"), "echo": "yes"}))
    assert error["param"] == "echo"


@pytest.mark.parametrize("logprobs", [0, 1, 5])
def test_completion_logprobs_in_range_is_forwarded(gw: Gateway, logprobs: int) -> None:
    call(gw, "completions", logprobs=logprobs)
    assert gw.forwarded()["logprobs"] == logprobs


@pytest.mark.parametrize("logprobs", [-1, 6, 20])
def test_completion_logprobs_out_of_range_is_rejected(gw: Gateway, logprobs: int) -> None:
    assert rejected(gw, "completions", logprobs=logprobs)["param"] == "logprobs"


def test_completion_suffix_is_forwarded(gw: Gateway) -> None:
    call(gw, "completions", suffix="\n}")
    assert gw.forwarded()["suffix"] == "\n}"


# ---------------------------------------------------------------------------------------------
# Fields completions and chat share
# ---------------------------------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("field", ["frequency_penalty", "presence_penalty"])
@pytest.mark.parametrize("value", [-2, -2.0, 0, 1.5, 2])
def test_penalties_in_range_are_forwarded(
    gw: Gateway, endpoint: str, field: str, value: float
) -> None:
    call(gw, endpoint, **{field: value})
    assert gw.forwarded()[field] == value


@BOTH
@pytest.mark.parametrize("field", ["frequency_penalty", "presence_penalty"])
@pytest.mark.parametrize("value", [-2.01, 2.01, 100])
def test_penalties_out_of_range_are_rejected(
    gw: Gateway, endpoint: str, field: str, value: float
) -> None:
    assert rejected(gw, endpoint, **{field: value})["param"] == field


@BOTH
def test_logit_bias_in_range_is_forwarded(gw: Gateway, endpoint: str) -> None:
    bias = {"50256": -100, "1": 100, "2": 0, "3": 12.5}
    call(gw, endpoint, logit_bias=bias)
    assert gw.forwarded()["logit_bias"] == bias


@BOTH
@pytest.mark.parametrize(
    "bias", [{"50256": -100.5}, {"50256": 101}, {"7": 1, "8": -1000}, {"abc": 1}], ids=repr
)
def test_logit_bias_out_of_range_is_rejected(
    gw: Gateway, endpoint: str, bias: dict[str, float]
) -> None:
    param = rejected(gw, endpoint, logit_bias=bias)["param"]
    assert param is not None
    assert param.startswith("logit_bias")


@BOTH
@pytest.mark.parametrize("n", [1, 2, 128])
def test_n_in_range_is_forwarded(gw: Gateway, endpoint: str, n: int) -> None:
    answer = call(gw, endpoint, n=n)
    assert gw.forwarded()["n"] == n
    assert len(answer.choices) == n


@BOTH
@pytest.mark.parametrize("n", [0, -1, 129])
def test_n_out_of_range_is_rejected(gw: Gateway, endpoint: str, n: int) -> None:
    assert rejected(gw, endpoint, n=n)["param"] == "n"


@BOTH
@pytest.mark.parametrize("seed", [INT64_MIN, -1, 0, 42, INT64_MAX])
def test_seed_within_int64_is_forwarded_exactly(gw: Gateway, endpoint: str, seed: int) -> None:
    call(gw, endpoint, seed=seed)
    forwarded = gw.forwarded()["seed"]
    assert forwarded == seed
    assert isinstance(forwarded, int)


@BOTH
@pytest.mark.parametrize("seed", [INT64_MAX + 1, INT64_MIN - 1, 2**64, 1.5])
def test_seed_outside_int64_is_rejected(gw: Gateway, endpoint: str, seed: float) -> None:
    assert rejected(gw, endpoint, seed=seed)["param"] == "seed"


@BOTH
@pytest.mark.parametrize("stop", ["\n", ["a"], ["a", "b", "c", "d"]], ids=repr)
def test_stop_up_to_four_is_forwarded(gw: Gateway, endpoint: str, stop: Any) -> None:
    call(gw, endpoint, stop=stop)
    assert gw.forwarded()["stop"] == stop


@BOTH
def test_stop_more_than_four_is_rejected(gw: Gateway, endpoint: str) -> None:
    assert rejected(gw, endpoint, stop=["a", "b", "c", "d", "e"])["param"] == "stop"


def test_stop_more_than_four_says_the_limit(gw: Gateway) -> None:
    message = rejected(gw, "chat", stop=["a", "b", "c", "d", "e"])["message"]
    assert "4" in message
    assert "valid string" not in message


@BOTH
def test_stream_options_without_stream_is_rejected(gw: Gateway, endpoint: str) -> None:
    error = rejected(gw, endpoint, stream_options={"include_usage": True})
    assert error["param"] == "stream_options"
    error = rejected(gw, endpoint, stream=False, stream_options={"include_usage": True})
    assert error["param"] == "stream_options"


@BOTH
def test_stream_options_with_stream_is_forwarded(gw: Gateway, endpoint: str) -> None:
    chunks = list(call(gw, endpoint, stream=True, stream_options={"include_usage": True}))
    assert gw.forwarded()["stream_options"] == {"include_usage": True}
    assert gw.forwarded()["stream"] is True
    assert chunks[-1].usage is not None


@BOTH
@pytest.mark.parametrize("temperature", [0, 0.0, 0.7, 1, 2])
def test_temperature_in_range_is_forwarded(gw: Gateway, endpoint: str, temperature: float) -> None:
    call(gw, endpoint, temperature=temperature)
    assert gw.forwarded()["temperature"] == temperature


@BOTH
@pytest.mark.parametrize("temperature", [-0.1, 2.01, 5])
def test_temperature_out_of_range_is_rejected(
    gw: Gateway, endpoint: str, temperature: float
) -> None:
    assert rejected(gw, endpoint, temperature=temperature)["param"] == "temperature"


@BOTH
@pytest.mark.parametrize("top_p", [0, 0.5, 1])
def test_top_p_in_range_is_forwarded(gw: Gateway, endpoint: str, top_p: float) -> None:
    call(gw, endpoint, top_p=top_p)
    assert gw.forwarded()["top_p"] == top_p


@BOTH
@pytest.mark.parametrize("top_p", [-0.01, 1.01])
def test_top_p_out_of_range_is_rejected(gw: Gateway, endpoint: str, top_p: float) -> None:
    assert rejected(gw, endpoint, top_p=top_p)["param"] == "top_p"


@BOTH
def test_user_is_forwarded(gw: Gateway, endpoint: str) -> None:
    call(gw, endpoint, user="user-1234")
    assert gw.forwarded()["user"] == "user-1234"


@BOTH
@pytest.mark.parametrize(
    ("field", "value"),
    [("temperature", "hot"), ("n", "two"), ("stream", "yes"), ("stop", 7), ("user", 5)],
)
def test_wrong_types_are_rejected_with_their_param(
    gw: Gateway, endpoint: str, field: str, value: Any
) -> None:
    error = raw_error(gw.post(raw_path(endpoint), {**raw_base(endpoint), field: value}))
    assert error["param"] == field


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("temperature", "0.5"),
        ("top_p", False),
        ("n", True),
        ("n", 2.0),
        ("max_tokens", "16"),
        ("seed", "42"),
        ("logprobs", True),
        ("prompt", [True, 2]),
    ],
    ids=repr,
)
def test_values_of_the_wrong_json_type_are_not_coerced_and_forwarded(
    gw: Gateway, field: str, value: Any
) -> None:
    response = gw.post("/v1/completions", {**raw_base("completions"), field: value})
    assert not gw.upstream.requests, f"forwarded as {gw.forwarded()[field]!r}"
    param = raw_error(response)["param"]
    assert param == field or param.startswith(f"{field}[")  # prompt[0]: the element itself


# ---------------------------------------------------------------------------------------------
# /v1/chat/completions
# ---------------------------------------------------------------------------------------------

TOOL_CALL = {
    "id": "call_1",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        "strict": True,
    },
}
EVERY_ROLE: list[dict[str, Any]] = [
    {"role": "system", "content": "You are terse."},
    {"role": "system", "content": [{"type": "text", "text": "Parts work too."}], "name": "sys"},
    {"role": "developer", "content": "Answer in English."},
    {"role": "user", "content": "What is the weather?", "name": "alice"},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "And in this picture?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
            {
                "type": "image_url",
                "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
            },
        ],
    },
    {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
    {"role": "assistant", "content": None, "function_call": TOOL_CALL["function"]},
    {"role": "function", "name": "get_weather", "content": "sunny"},
    {"role": "assistant", "content": "It is sunny."},
    {"role": "user", "content": "thanks"},
]


def chat(gw: Gateway, messages: Any = MESSAGES, **kwargs: Any) -> Any:
    return gw.client.chat.completions.create(model="m", messages=messages, **kwargs)


def chat_rejected(gw: Gateway, messages: Any = MESSAGES, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(openai.BadRequestError) as exc:
        chat(gw, messages, **kwargs)
    assert not gw.upstream.requests
    return bad_request(exc)


def test_chat_messages_of_every_role_are_forwarded_intact(gw: Gateway) -> None:
    answer = chat(gw, EVERY_ROLE)
    assert gw.forwarded() == {"model": "a-model", "messages": EVERY_ROLE}
    assert answer.choices[0].message.content == "echo: thanks"


@pytest.mark.parametrize("index", [0, 2])
def test_chat_tool_message_without_tool_call_id_names_it(gw: Gateway, index: int) -> None:
    messages: list[dict[str, Any]] = [dict(m) for m in MESSAGES * 3]
    messages[index] = {"role": "tool", "content": "sunny"}
    error = chat_rejected(gw, messages)
    assert error["param"] == f"messages[{index}].tool_call_id"


def test_chat_assistant_content_null_needs_tool_calls(gw: Gateway) -> None:
    messages = [*MESSAGES, {"role": "assistant", "content": None}]
    assert chat_rejected(gw, messages)["param"] == "messages[1].content"


def test_chat_unknown_role_is_rejected(gw: Gateway) -> None:
    messages = [*MESSAGES, {"role": "robot", "content": "beep"}]
    assert chat_rejected(gw, messages)["param"] == "messages[1].role"


def test_chat_user_part_of_unknown_type_is_rejected(gw: Gateway) -> None:
    messages = [{"role": "user", "content": [{"type": "hologram", "data": "x"}]}]
    param = chat_rejected(gw, messages)["param"]
    assert param is not None
    assert param.startswith("messages[0].content")


def test_chat_empty_messages_are_rejected(gw: Gateway) -> None:
    assert chat_rejected(gw, [])["param"] == "messages"


def test_chat_missing_messages_are_rejected(gw: Gateway) -> None:
    error = raw_error(gw.post("/v1/chat/completions", {"model": "m"}))
    assert error["param"] == "messages"
    assert error["code"] == "missing_required_parameter"


@pytest.mark.parametrize(
    "tool_choice",
    ["none", "auto", "required", {"type": "function", "function": {"name": "get_weather"}}],
    ids=repr,
)
def test_chat_tools_and_every_tool_choice_form_are_forwarded(gw: Gateway, tool_choice: Any) -> None:
    chat(gw, tools=[WEATHER_TOOL], tool_choice=tool_choice, parallel_tool_calls=False)
    forwarded = gw.forwarded()
    assert forwarded["tools"] == [WEATHER_TOOL]
    assert forwarded["tool_choice"] == tool_choice
    assert forwarded["parallel_tool_calls"] is False


@pytest.mark.parametrize("tool_choice", ["sometimes", {"type": "function"}, 3], ids=repr)
def test_chat_tool_choice_of_no_documented_form_is_rejected(gw: Gateway, tool_choice: Any) -> None:
    param = chat_rejected(gw, tools=[WEATHER_TOOL], tool_choice=tool_choice)["param"]
    assert param is not None
    assert param.startswith("tool_choice")


def test_chat_tool_without_function_name_is_rejected(gw: Gateway) -> None:
    tool = {"type": "function", "function": {"description": "nameless"}}
    error = chat_rejected(gw, tools=[tool])
    assert error["code"] == "missing_required_parameter"
    assert error["param"] is not None
    assert error["param"].startswith("tools[0]")
    assert error["param"].endswith("name")


def test_chat_tool_without_function_name_names_the_exact_path(gw: Gateway) -> None:
    tool = {"type": "function", "function": {"description": "nameless"}}
    assert chat_rejected(gw, tools=[tool])["param"] == "tools[0].function.name"


def test_chat_tool_call_without_arguments_names_the_exact_path(gw: Gateway) -> None:
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather"}}
    messages = [{"role": "assistant", "content": None, "tool_calls": [call]}]
    error = chat_rejected(gw, messages)
    assert error["param"] == "messages[0].tool_calls[0].function.arguments"


def test_chat_json_schema_format_without_schema_object_names_it(gw: Gateway) -> None:
    error = chat_rejected(gw, response_format={"type": "json_schema"})
    assert error["param"] == "response_format.json_schema"


def test_chat_text_part_without_text_names_the_part(gw: Gateway) -> None:
    error = chat_rejected(gw, [{"role": "user", "content": [{"type": "text"}]}])
    assert error["param"] == "messages[0].content[0].text"


@pytest.mark.parametrize("parallel", [True, False])
def test_chat_parallel_tool_calls_is_forwarded(gw: Gateway, parallel: bool) -> None:
    chat(gw, tools=[WEATHER_TOOL], parallel_tool_calls=parallel)
    assert gw.forwarded()["parallel_tool_calls"] is parallel


@pytest.mark.parametrize("function_call", ["none", "auto", {"name": "get_weather"}], ids=repr)
def test_chat_functions_and_function_call_are_forwarded(gw: Gateway, function_call: Any) -> None:
    functions = [WEATHER_TOOL["function"]]
    chat(gw, functions=functions, function_call=function_call)
    forwarded = gw.forwarded()
    assert forwarded["functions"] == functions
    assert forwarded["function_call"] == function_call


@pytest.mark.parametrize(
    "response_format",
    [
        {"type": "text"},
        {"type": "json_object"},
        {
            "type": "json_schema",
            "json_schema": {
                "name": "weather",
                "schema": {"type": "object", "properties": {"sunny": {"type": "boolean"}}},
                "strict": True,
            },
        },
    ],
    ids=lambda f: f["type"],
)
def test_chat_response_formats_are_forwarded(gw: Gateway, response_format: Any) -> None:
    chat(gw, response_format=response_format)
    assert gw.forwarded()["response_format"] == response_format


@pytest.mark.parametrize(
    "response_format", [{"type": "xml"}, {"type": "json_schema"}, "json"], ids=repr
)
def test_chat_response_format_of_no_documented_form_is_rejected(
    gw: Gateway, response_format: Any
) -> None:
    param = chat_rejected(gw, response_format=response_format)["param"]
    assert param is not None
    assert param.startswith("response_format")


@pytest.mark.parametrize("top_logprobs", [0, 5, 20])
def test_chat_logprobs_with_top_logprobs_in_range_are_forwarded(
    gw: Gateway, top_logprobs: int
) -> None:
    chat(gw, logprobs=True, top_logprobs=top_logprobs)
    assert gw.forwarded()["logprobs"] is True
    assert gw.forwarded()["top_logprobs"] == top_logprobs


@pytest.mark.parametrize("top_logprobs", [-1, 21])
def test_chat_top_logprobs_out_of_range_is_rejected(gw: Gateway, top_logprobs: int) -> None:
    assert chat_rejected(gw, logprobs=True, top_logprobs=top_logprobs)["param"] == "top_logprobs"


@pytest.mark.parametrize("logprobs", [None, False])
def test_chat_top_logprobs_without_logprobs_is_rejected(gw: Gateway, logprobs: bool | None) -> None:
    kwargs: dict[str, Any] = {"top_logprobs": 3}
    if logprobs is not None:
        kwargs["logprobs"] = logprobs
    error = chat_rejected(gw, **kwargs)
    assert error["param"] == "top_logprobs"
    assert "logprobs" in error["message"]


def test_chat_token_limits_are_forwarded(gw: Gateway) -> None:
    chat(gw, max_completion_tokens=64)
    assert gw.forwarded()["max_completion_tokens"] == 64
    chat(gw, max_tokens=32)
    assert gw.forwarded()["max_tokens"] == 32


@pytest.mark.parametrize("pairs", [0, 1, 16])
def test_chat_metadata_up_to_sixteen_pairs_is_forwarded(gw: Gateway, pairs: int) -> None:
    metadata = {f"key{i}": f"value{i}" for i in range(pairs)}
    chat(gw, metadata=metadata)
    assert gw.forwarded()["metadata"] == metadata


def test_chat_metadata_over_sixteen_pairs_is_rejected(gw: Gateway) -> None:
    metadata = {f"key{i}": "v" for i in range(17)}
    assert chat_rejected(gw, metadata=metadata)["param"] == "metadata"


def test_chat_metadata_values_must_be_strings(gw: Gateway) -> None:
    param = chat_rejected(gw, metadata={"team": 7})["param"]
    assert param is not None
    assert param.startswith("metadata")


# ---------------------------------------------------------------------------------------------
# /v1/embeddings
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["embed me", ["one", "two", "three"], [11, 12, 13], [[1, 2], [3, 4, 5]]],
    ids=["string", "strings", "tokens", "token-lists"],
)
def test_embedding_input_forms_are_forwarded_intact(gw: Gateway, text: Any) -> None:
    answer = gw.client.embeddings.create(model="m", input=text, encoding_format="float")
    assert gw.forwarded() == {"model": "a-model", "input": text, "encoding_format": "float"}
    batch = 1 if isinstance(text, str) or isinstance(text[0], int) else len(text)
    assert [d.index for d in answer.data] == list(range(batch))


@pytest.mark.parametrize("text", ["", [""], ["ok", ""], [], [[]]], ids=repr)
def test_embedding_empty_input_is_rejected(gw: Gateway, text: Any) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        gw.client.embeddings.create(model="m", input=text, encoding_format="float")
    param = bad_request(exc)["param"]
    assert param is not None
    assert param.startswith("input")
    assert not gw.upstream.requests


def test_embedding_empty_string_names_param_input(gw: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        gw.client.embeddings.create(model="m", input="", encoding_format="float")
    assert bad_request(exc)["param"] == "input"


def test_embedding_more_than_2048_inputs_are_rejected(gw: Gateway) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        gw.client.embeddings.create(model="m", input=["x"] * 2049, encoding_format="float")
    param = bad_request(exc)["param"]
    assert param is not None
    assert param.startswith("input")


@pytest.mark.parametrize("tokens", [[1] * 2049, [[1] * 3] * 2049])
def test_embedding_token_arrays_past_2048_are_rejected(gw: Gateway, tokens: Any) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        gw.client.embeddings.create(model="m", input=tokens, encoding_format="float")
    param = bad_request(exc)["param"]
    assert param is not None
    assert param.startswith("input")


def float32_le(encoded: str) -> list[float]:
    raw = base64.b64decode(encoded)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def test_embedding_base64_is_decoded_by_the_sdk_to_the_same_floats(gw: Gateway) -> None:
    floats = gw.client.embeddings.create(model="m", input="vector", encoding_format="float")
    assert gw.forwarded()["encoding_format"] == "float"
    expected = floats.data[0].embedding
    assert len(expected) == 8
    assert all(isinstance(x, float) for x in expected)
    implicit = gw.client.embeddings.create(model="m", input=["vector", "other"])
    assert gw.forwarded()["encoding_format"] == "base64"  # the SDK asks for base64 itself
    assert implicit.data[0].embedding == expected  # ... and decodes it back to floats
    assert implicit.data[1].embedding != expected
    assert len(implicit.data[1].embedding) == 8


def test_embedding_base64_asked_for_is_little_endian_float32(gw: Gateway) -> None:
    floats = gw.client.embeddings.create(model="m", input="vector", encoding_format="float")
    explicit = gw.client.embeddings.create(model="m", input="vector", encoding_format="base64")
    assert gw.forwarded()["encoding_format"] == "base64"
    encoded = explicit.data[0].embedding
    assert isinstance(encoded, str)  # the SDK leaves an explicitly requested encoding alone
    assert float32_le(encoded) == floats.data[0].embedding


def test_embedding_unknown_encoding_format_is_rejected(gw: Gateway) -> None:
    response = gw.post("/v1/embeddings", {"model": "m", "input": "x", "encoding_format": "hex"})
    assert raw_error(response)["param"] == "encoding_format"


@pytest.mark.parametrize("dimensions", [1, 3, 256])
def test_embedding_dimensions_are_forwarded(gw: Gateway, dimensions: int) -> None:
    answer = gw.client.embeddings.create(
        model="m", input="x", dimensions=dimensions, encoding_format="float"
    )
    assert gw.forwarded()["dimensions"] == dimensions
    assert len(answer.data[0].embedding) == dimensions


@pytest.mark.parametrize("dimensions", [0, -5])
def test_embedding_dimensions_below_one_are_rejected(gw: Gateway, dimensions: int) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        gw.client.embeddings.create(model="m", input="x", dimensions=dimensions)
    assert bad_request(exc)["param"] == "dimensions"


# ---------------------------------------------------------------------------------------------
# What is forwarded: unknown fields yes, router-only fields no, model replaced
# ---------------------------------------------------------------------------------------------

EXTRA = {"vendor_knob": {"nested": [1, 2, {"deep": True}]}, "top_k": 40, "repetition_penalty": 1.1}


def test_unknown_fields_are_forwarded_on_every_endpoint(gw: Gateway) -> None:
    gw.client.completions.create(model="m", prompt="hi", extra_body=EXTRA)
    assert gw.forwarded() == {"model": "a-model", "prompt": "hi", **EXTRA}
    gw.client.chat.completions.create(model="m", messages=MESSAGES, extra_body=EXTRA)  # type: ignore[arg-type]
    assert gw.forwarded() == {"model": "a-model", "messages": MESSAGES, **EXTRA}
    gw.client.embeddings.create(model="m", input="hi", encoding_format="float", extra_body=EXTRA)
    assert gw.forwarded() == {
        "model": "a-model",
        "input": "hi",
        "encoding_format": "float",
        **EXTRA,
    }


def test_unknown_fields_inside_messages_are_forwarded(gw: Gateway) -> None:
    messages = [{"role": "user", "content": "hi", "cache_control": {"type": "ephemeral"}}]
    chat(gw, messages)
    assert gw.forwarded()["messages"] == messages


@pytest.mark.parametrize("endpoint", ["completions", "chat", "embeddings"])
def test_router_only_fallbacks_key_is_not_forwarded(gw: Gateway, endpoint: str) -> None:
    extra = {"fallbacks": ["m"], "other": 1}
    if endpoint == "embeddings":
        gw.client.embeddings.create(model="m", input="x", extra_body=extra)
    else:
        call(gw, endpoint, extra_body=extra)
    forwarded = gw.forwarded()
    assert "fallbacks" not in forwarded
    assert forwarded["other"] == 1


def test_unknown_fallback_model_is_rejected_naming_it(gw: Gateway) -> None:
    error = rejected(gw, "chat", extra_body={"fallbacks": ["m", "ghost"]})
    assert error["param"] == "fallbacks[1]"
    assert "ghost" in error["message"]


@pytest.mark.parametrize("endpoint", ["completions", "chat", "embeddings"])
def test_model_is_replaced_by_the_deployments_upstream_id(gw: Gateway, endpoint: str) -> None:
    if endpoint == "embeddings":
        gw.client.embeddings.create(model="m", input="x")
    else:
        call(gw, endpoint)
    request = gw.upstream.requests[-1]
    assert request.json["model"] == "a-model"
    assert b'"m"' not in request.body


@pytest.mark.parametrize("temperature", ["hot", [1], {"a": 1}, True])
def test_embeddings_with_a_temperature_of_any_type_is_never_a_500(
    gw: Gateway, temperature: Any
) -> None:
    """Embeddings have no `temperature`: the translation check compared whatever came with
    a float and answered 500 for a string."""
    answer = gw.post("/v1/embeddings", {"model": "m", "input": "x", "temperature": temperature})
    assert answer.status_code < 500, answer.text
