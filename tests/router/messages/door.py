"""What the Anthropic-shaped door's end-to-end tests share: a Turnout in front of one
OpenAI-compatible fake, serving `m` and `opus` (which a `claude-*opus*` pattern takes),
an `anthropic` SDK client for it, and what the fake was sent."""

from __future__ import annotations

from typing import Any

import anthropic

from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.turnout_server import RunningTurnout, simple_config

KEY = "sk-messages"
VERSION = {"anthropic-version": "2023-06-01"}
HI: list[Any] = [{"role": "user", "content": "hi"}]
WEATHER: Any = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def start_door(upstream: FakeOpenAIUpstream) -> RunningTurnout:
    models = {
        "m": {"deployments": [{"provider": "up", "model": "up-model"}]},
        "opus": {
            "deployments": [{"provider": "up", "model": "big-model"}],
            "match": ["claude-*opus*"],
        },
    }
    config = simple_config({"up": upstream.base_url}, models=models, keys=[{"key": KEY}])
    return RunningTurnout(config).start()


def sdk(server: RunningTurnout) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0, timeout=20)


def last_chat(upstream: FakeOpenAIUpstream) -> dict[str, Any]:
    """The last chat completions body the fake was sent."""
    sent = [r for r in upstream.requests if r.path.endswith("/chat/completions")]
    body: dict[str, Any] = sent[-1].json
    return body
