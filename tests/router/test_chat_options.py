"""OpenAI's newer chat options (reasoning effort, verbosity, audio, predicted output, web
search, prompt caching, moderation, service tiers, safety identifiers, custom tools):
validated at the edge (a bad value is a 400 naming its `param`, before any call), forwarded
intact to a backend that has them, and, on one that lacks them, refused or dropped as the
caller's translation mode says, with what was dropped named in `x-turnout-dropped`.

The official SDK against a real Turnout in front of a fake OpenAI server. Model `m` reaches
it as it is; model `lean` reaches it through a deployment that declares none of the options.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.turnout_server import RunningTurnout, simple_config

MESSAGES: list[Any] = [{"role": "user", "content": "hello there"}]
LACKING = {
    key: False
    for key in (
        "custom_tools", "reasoning_effort", "verbosity", "modalities", "web_search_options",
        "moderation", "prediction", "service_tier", "store", "prompt_cache_key",
        "safety_identifier",
    )
}  # fmt: skip
FUNCTION_TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {}}}
CUSTOM_TOOL = {
    "type": "custom",
    "custom": {
        "name": "sql",
        "description": "runs a query",
        "format": {"type": "grammar", "grammar": {"definition": "start: WORD", "syntax": "lark"}},
    },
}
# Options whose absence changes the answer: refused unless the caller chose `drop`.
CHANGING = {
    "reasoning_effort": "high",
    "verbosity": "low",
    "modalities": ["text", "audio"],
    "audio": {"voice": "alloy", "format": "mp3"},
    "web_search_options": {
        "search_context_size": "low",
        "user_location": {"type": "approximate", "approximate": {"city": "Lyon"}},
    },
    "moderation": {"model": "omni-moderation-latest", "policy": {"input": {"mode": "block"}}},
}
# Options that only tune cost, latency or bookkeeping: dropped, reported, in emulate mode.
TUNING = {
    "prediction": {"type": "content", "content": [{"type": "text", "text": "draft"}]},
    "service_tier": "flex",
    "store": True,
    "prompt_cache_key": "tenant-42",
    "prompt_cache_retention": "24h",
    "prompt_cache_options": {"ttl": "30m", "mode": "explicit"},
    "safety_identifier": "c0ffee",
}


@dataclass
class Gateway:
    upstream: FakeOpenAIUpstream
    client: openai.OpenAI

    def forwarded(self) -> dict[str, Any]:
        body = self.upstream.requests[-1].json
        assert isinstance(body, dict)
        return body

    def chat(self, model: str = "m", **extra: Any) -> Any:
        return self.client.chat.completions.with_raw_response.create(
            model=model, messages=MESSAGES, extra_body=extra
        )

    def refused(self, model: str = "m", **extra: Any) -> dict[str, Any]:
        with pytest.raises(openai.BadRequestError) as caught:
            self.chat(model, **extra)
        assert not self.upstream.requests, "a refused request must not reach the upstream"
        error = caught.value.response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"}
        assert error["type"] == "invalid_request_error"
        return dict(error)


@pytest.fixture(scope="module")
def gw() -> Iterator[Gateway]:
    with FakeOpenAIUpstream() as up:
        deployment = {"provider": "a", "model": "a-lean", "capabilities": LACKING}
        models = {
            "m": {"deployments": [{"provider": "a", "model": "a-model"}]},
            "lean": {"deployments": [deployment]},
        }
        turnout = RunningTurnout(simple_config({"a": up.base_url}, models=models)).start()
        try:
            with turnout.client() as client:
                yield Gateway(up, client)
        finally:
            turnout.stop()


@pytest.fixture(autouse=True)
def _fresh_upstream(gw: Gateway) -> None:
    gw.upstream.reset()


GOOD: list[dict[str, Any]] = [
    *({key: value} for key, value in {**CHANGING, **TUNING}.items()),
    {"audio": {"voice": {"id": "voice_123"}, "format": "pcm16"}, "modalities": ["audio"]},
    {"prediction": {"type": "content", "content": "the text to repeat"}},
    {"reasoning_effort": "none", "verbosity": "high", "service_tier": "priority"},
    {
        "tools": [CUSTOM_TOOL, FUNCTION_TOOL],
        "tool_choice": {"type": "custom", "custom": {"name": "sql"}},
    },
    {
        "tools": [FUNCTION_TOOL],
        "tool_choice": {
            "type": "allowed_tools",
            "allowed_tools": {"mode": "auto", "tools": [FUNCTION_TOOL]},
        },
    },
    {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "q", "prompt_cache_breakpoint": {"mode": "explicit"}}
                ],
            },
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c1", "type": "custom", "custom": {"name": "sql", "input": "x"}}
                ],
            },
            {"role": "assistant", "audio": {"id": "audio_1"}},
            {
                "role": "user",
                "content": [{"type": "file", "file": {"file_id": "file-1", "filename": "a.pdf"}}],
            },
        ]
    },
]


@pytest.mark.parametrize("extra", GOOD, ids=lambda extra: "+".join(extra))
def test_documented_values_are_forwarded_intact(gw: Gateway, extra: dict[str, Any]) -> None:
    reply = gw.chat(**extra)
    assert reply.status_code == 200
    sent = {"model": "a-model", "messages": MESSAGES, **extra}
    assert gw.forwarded() == sent
    assert "x-turnout-dropped" not in reply.headers


BAD: list[tuple[dict[str, Any], str]] = [
    ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ({"reasoning_effort": 3}, "reasoning_effort"),
    ({"verbosity": "loud"}, "verbosity"),
    ({"service_tier": "gold"}, "service_tier"),
    ({"modalities": "text"}, "modalities"),
    ({"modalities": ["video"]}, "modalities[0]"),
    ({"audio": {"voice": "alloy"}}, "audio.format"),
    ({"audio": {"voice": "alloy", "format": "ogg"}}, "audio.format"),
    ({"audio": {"voice": 7, "format": "mp3"}}, "audio.voice"),
    ({"audio": "alloy"}, "audio"),
    ({"prediction": {"type": "content"}}, "prediction.content"),
    ({"prediction": {"type": "diff", "content": "x"}}, "prediction.type"),
    ({"prediction": {"type": "content", "content": []}}, "prediction.content"),
    (
        {"web_search_options": {"search_context_size": "huge"}},
        "web_search_options.search_context_size",
    ),
    (
        {"web_search_options": {"user_location": {"type": "exact", "approximate": {}}}},
        "web_search_options.user_location.type",
    ),
    (
        {
            "web_search_options": {
                "user_location": {"type": "approximate", "approximate": {"city": 1}}
            }
        },
        "web_search_options.user_location.approximate.city",
    ),
    ({"web_search_options": True}, "web_search_options"),
    ({"prompt_cache_key": 42}, "prompt_cache_key"),
    ({"prompt_cache_retention": "1h"}, "prompt_cache_retention"),
    ({"prompt_cache_options": {"ttl": "1h"}}, "prompt_cache_options.ttl"),
    ({"prompt_cache_options": {"mode": "always"}}, "prompt_cache_options.mode"),
    ({"safety_identifier": "x" * 65}, "safety_identifier"),
    ({"safety_identifier": 5}, "safety_identifier"),
    ({"store": "yes"}, "store"),
    ({"moderation": {"policy": {}}}, "moderation.model"),
    (
        {"moderation": {"model": "m", "policy": {"output": {"mode": "warn"}}}},
        "moderation.policy.output.mode",
    ),
    ({"tools": [{"type": "custom", "custom": {"description": "no name"}}]}, "tools[0].custom.name"),
    (
        {
            "tools": [
                {
                    "type": "custom",
                    "custom": {
                        "name": "t",
                        "format": {
                            "type": "grammar",
                            "grammar": {"definition": "x", "syntax": "peg"},
                        },
                    },
                }
            ]
        },
        "tools[0].custom.format.grammar.syntax",
    ),
    ({"tools": [{"type": "computer", "computer": {}}]}, "tools[0].type"),
    (
        {
            "tool_choice": {
                "type": "allowed_tools",
                "allowed_tools": {"mode": "sometimes", "tools": []},
            }
        },
        "tool_choice.allowed_tools.mode",
    ),
    ({"tool_choice": {"type": "custom", "custom": {}}}, "tool_choice.custom.name"),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "q", "prompt_cache_breakpoint": {"mode": "auto"}}
                    ],
                }
            ]
        },
        "messages[0].content[0].prompt_cache_breakpoint.mode",
    ),
    (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_audio", "input_audio": {"data": "AAA", "format": "ogg"}}
                    ],
                }
            ]
        },
        "messages[0].content[0].input_audio.format",
    ),
    (
        {"messages": [{"role": "user", "content": [{"type": "file", "file": {"file_id": 5}}]}]},
        "messages[0].content[0].file.file_id",
    ),
    ({"messages": [{"role": "assistant", "audio": {}}]}, "messages[0].audio.id"),
    (
        {
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "type": "custom", "custom": {"name": "t"}}],
                }
            ]
        },
        "messages[0].tool_calls[0].custom.input",
    ),
]


@pytest.mark.parametrize(("extra", "param"), BAD, ids=lambda v: v if isinstance(v, str) else None)
def test_a_bad_value_is_400_naming_the_param(
    gw: Gateway, extra: dict[str, Any], param: str
) -> None:
    error = gw.refused(**extra)
    assert error["param"] == param
    assert error["code"] in {"invalid_type", "invalid_value", "missing_required_parameter"}


@pytest.mark.parametrize("key", sorted({**CHANGING, **TUNING}))
def test_strict_mode_refuses_an_option_the_deployment_lacks(gw: Gateway, key: str) -> None:
    value = {**CHANGING, **TUNING}[key]
    error = gw.refused("lean", **{key: value}, router={"translation": "strict"})
    assert (error["param"], error["code"]) == (key, "unsupported_parameter")


@pytest.mark.parametrize("key", sorted({**CHANGING, **TUNING}))
def test_drop_mode_drops_an_option_the_deployment_lacks_and_says_so(gw: Gateway, key: str) -> None:
    value = {**CHANGING, **TUNING}[key]
    reply = gw.chat("lean", **{key: value}, router={"translation": "drop"})
    assert reply.status_code == 200
    assert reply.headers["x-turnout-dropped"] == key
    assert gw.forwarded() == {"model": "a-lean", "messages": MESSAGES}


@pytest.mark.parametrize("key", sorted(CHANGING))
def test_emulate_mode_refuses_an_option_that_changes_the_answer(gw: Gateway, key: str) -> None:
    error = gw.refused("lean", **{key: CHANGING[key]})
    assert (error["param"], error["code"]) == (key, "unsupported_parameter")


def test_emulate_mode_drops_options_that_only_tune_cost_and_says_so(gw: Gateway) -> None:
    reply = gw.chat("lean", **TUNING)
    assert reply.status_code == 200
    dropped = [key.strip() for key in reply.headers["x-turnout-dropped"].split(",")]
    assert sorted(dropped) == sorted(TUNING)
    assert gw.forwarded() == {"model": "a-lean", "messages": MESSAGES}


def test_values_that_ask_for_nothing_are_removed_unreported(gw: Gateway) -> None:
    reply = gw.chat(
        "lean",
        store=False,
        modalities=["text"],
        service_tier="auto",
        router={"translation": "strict"},
    )
    assert reply.status_code == 200
    assert "x-turnout-dropped" not in reply.headers
    assert gw.forwarded() == {"model": "a-lean", "messages": MESSAGES}


def test_custom_tools_are_refused_or_dropped_keeping_the_function_tools(gw: Gateway) -> None:
    tools = {
        "tools": [CUSTOM_TOOL, FUNCTION_TOOL],
        "tool_choice": {"type": "custom", "custom": {"name": "sql"}},
    }
    error = gw.refused("lean", **tools)
    assert (error["param"], error["code"]) == ("tools", "unsupported_parameter")
    reply = gw.chat("lean", **tools, router={"translation": "drop"})
    assert reply.headers["x-turnout-dropped"].replace(" ", "") == "tools,tool_choice"
    assert gw.forwarded() == {"model": "a-lean", "messages": MESSAGES, "tools": [FUNCTION_TOOL]}


def test_an_allowed_tools_choice_needs_the_same_support(gw: Gateway) -> None:
    choice = {
        "type": "allowed_tools",
        "allowed_tools": {"mode": "required", "tools": [FUNCTION_TOOL]},
    }
    error = gw.refused("lean", tools=[FUNCTION_TOOL], tool_choice=choice)
    assert error["param"] == "tool_choice"
    reply = gw.chat(
        "lean", tools=[FUNCTION_TOOL], tool_choice=choice, router={"translation": "drop"}
    )
    assert reply.headers["x-turnout-dropped"] == "tool_choice"
    assert gw.forwarded()["tools"] == [FUNCTION_TOOL]
    assert "tool_choice" not in gw.forwarded()
