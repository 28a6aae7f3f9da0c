"""What the Anthropic adapter cannot take, known before any call: the official openai SDK
against a real Turnout in front of a fake Messages API (and a fake OpenAI server)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest

from tests.fakes.anthropic_upstream import FakeAnthropicUpstream, Reply
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[[dict[str, Any]], RunningTurnout]
MESSAGES: list[Any] = [{"role": "user", "content": "hi there"}]
STRICT = {"router": {"translation": "strict"}}


@pytest.fixture
def claude() -> Iterator[FakeAnthropicUpstream]:
    with FakeAnthropicUpstream() as fake:
        yield fake


def config(claude: FakeAnthropicUpstream, *also: FakeOpenAIUpstream) -> dict[str, Any]:
    provider = {"kind": "anthropic", "base_url": claude.base_url, "api_key": "sk-ant-test"}
    deployments = [{"provider": "claude", "model": "claude-haiku"}]
    providers: dict[str, Any] = {"claude": provider}
    for i, upstream in enumerate(also):
        providers[f"oa{i}"] = {"kind": "openai", "base_url": upstream.base_url}
        deployments.append({"provider": f"oa{i}", "model": "gpt"})
    return simple_config({}, providers=providers, models={"c": {"deployments": deployments}})


def test_whitespace_only_stop_sequences_are_matched_by_turnout(
    turnout: StartTurnout, claude: FakeAnthropicUpstream
) -> None:
    claude.enqueue(Reply(text="line one\nline two"), Reply(text="line one\nline two"))
    with turnout(config(claude)).client() as client:
        whole = client.chat.completions.with_raw_response.create(
            model="c", messages=MESSAGES, stop=["\n", "never"]
        )
        streamed = list(
            client.chat.completions.create(
                model="c", messages=MESSAGES, stop=["\n", "never"], stream=True
            )
        )
    assert whole.headers["x-turnout-emulated"] == "stop"
    assert whole.parse().choices[0].message.content == "line one"
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "line one"
    assert [c.choices[0].finish_reason for c in streamed if c.choices][-1] == "stop"
    assert all("stop_sequences" not in r.json for r in claude.requests)


def test_whitespace_only_stop_sequences_in_strict_mode_are_400_naming_stop(
    turnout: StartTurnout, claude: FakeAnthropicUpstream
) -> None:
    with (
        turnout(config(claude)).client() as client,
        pytest.raises(openai.BadRequestError) as caught,
    ):
        client.chat.completions.create(model="c", messages=MESSAGES, stop=[" "], extra_body=STRICT)
    assert caught.value.body["param"] == "stop"  # type: ignore[index]
    assert claude.requests == []


def test_a_field_anthropic_cannot_take_skips_it_before_any_call(
    turnout: StartTurnout, claude: FakeAnthropicUpstream, upstream: FakeOpenAIUpstream
) -> None:
    with turnout(config(claude, upstream)).client() as client:
        reply = client.chat.completions.with_raw_response.create(
            model="c", messages=MESSAGES, reasoning_effort="low"
        )
    assert reply.headers["x-turnout-deployment"] == "oa0/gpt"
    assert reply.headers["x-turnout-attempts"] == "1"
    assert claude.requests == []
    assert upstream.requests[0].json["reasoning_effort"] == "low"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"reasoning_effort": "low"}, "reasoning_effort"),
        ({"functions": [{"name": "f", "parameters": {"type": "object"}}]}, "functions"),
        ({"function_call": "none"}, "function_call"),
    ],
)
def test_a_field_no_deployment_can_take_is_400_naming_it(
    turnout: StartTurnout, claude: FakeAnthropicUpstream, extra: dict[str, Any], param: str
) -> None:
    with (
        turnout(config(claude)).client() as client,
        pytest.raises(openai.BadRequestError) as caught,
    ):
        client.chat.completions.create(model="c", messages=MESSAGES, extra_body=extra)
    assert caught.value.body["param"] == param  # type: ignore[index]
    assert caught.value.body["code"] == "unsupported_parameter"  # type: ignore[index]
    assert claude.requests == []


def test_drop_mode_drops_the_field_and_says_so(
    turnout: StartTurnout, claude: FakeAnthropicUpstream
) -> None:
    with turnout(config(claude)).client() as client:
        reply = client.chat.completions.with_raw_response.create(
            model="c",
            messages=MESSAGES,
            reasoning_effort="low",
            extra_body={"router": {"translation": "drop"}},
        )
    assert reply.headers["x-turnout-dropped"] == "reasoning_effort"
    assert reply.parse().choices[0].message.content == "Hello from Claude"
    assert "reasoning_effort" not in claude.requests[0].json


@pytest.mark.parametrize("stop_reason", ["pause_turn", "model_context_window_exceeded"])
def test_an_answer_anthropic_cut_short_is_never_a_clean_stop(
    turnout: StartTurnout, claude: FakeAnthropicUpstream, stop_reason: str
) -> None:
    claude.enqueue(Reply(stop_reason=stop_reason), Reply(stop_reason=stop_reason))
    with turnout(config(claude)).client() as client:
        whole = client.chat.completions.create(model="c", messages=MESSAGES)
        streamed = list(client.chat.completions.create(model="c", messages=MESSAGES, stream=True))
    assert whole.choices[0].finish_reason == "length"
    assert [c.choices[0].finish_reason for c in streamed if c.choices][-1] == "length"
