"""The Messages door under review (R3): what a client can make it do beyond a plain
request. Each test failed on the code before its fix:

- count_tokens routes a name as a request does (aliases, `match:` patterns), renders a
  declared tokenizer's chat template off the event loop, forwards every `anthropic-beta`
  line, and answers a bug in Anthropic's envelope;
- a body nested deeper than Turnout can send on is a 400, not a crash;
- an `anthropic-beta` header is bounded;
- the response cache keeps apart Messages requests whose chat forms are equal but whose
  bodies (what an Anthropic deployment is sent) or beta headers differ."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import pytest

import router.messages.endpoints as messages_endpoints
from policies.dispatch import Dispatcher
from router.body import MAX_DEPTH, _nested_too_deeply
from tests.fakes.anthropic_upstream import FakeAnthropicUpstream, Reply
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.turnout_server import RunningTurnout, simple_config

KEY = "sk-messages-hardening"
HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": KEY}
HI: Any = [{"role": "user", "content": "hi"}]


@pytest.fixture
def claude() -> Iterator[FakeAnthropicUpstream]:
    with FakeAnthropicUpstream() as fake:
        yield fake


@pytest.fixture
def server(
    turnout: Callable[[dict[str, Any]], RunningTurnout],
    claude: FakeAnthropicUpstream,
    upstream: FakeOpenAIUpstream,
) -> RunningTurnout:
    providers = {
        "claude": {"kind": "anthropic", "base_url": claude.base_url, "api_key": "sk-ant-up"},
        "open": {"kind": "openai", "base_url": upstream.base_url},
    }
    models = {
        "sonnet": {
            "deployments": [{"provider": "claude", "model": "claude-up"}],
            "aliases": ["sonnet-latest"],
            "match": ["claude-*sonnet*"],
        },
        "open": {"deployments": [{"provider": "open", "model": "open-model"}]},
        "counted": {
            "deployments": [
                {"provider": "open", "model": "smol", "tokenizer": "smollm2-135m-instruct"}
            ]
        },
    }
    config = simple_config(
        {}, providers=providers, models=models, keys=[{"key": KEY}], cache={"ttl": 60}
    )
    return turnout(config)


@pytest.fixture
def client(server: RunningTurnout) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=KEY, max_retries=0, timeout=10)


def _sent(fake: FakeAnthropicUpstream, path: str) -> list[Any]:
    return [r for r in fake.requests if r.path == path]


@pytest.mark.parametrize("name", ["claude-sonnet-4-5", "sonnet-latest"])
def test_count_tokens_takes_the_names_a_request_takes(
    client: anthropic.Anthropic, claude: FakeAnthropicUpstream, name: str
) -> None:
    """Claude Code counts with the model name it sends messages with."""
    raw = client.messages.with_raw_response.count_tokens(model=name, messages=HI)

    assert raw.headers["x-turnout-token-count"] == "upstream"
    assert raw.parse().input_tokens > 0
    assert _sent(claude, "/v1/messages/count_tokens")[-1].json["model"] == "claude-up"


def test_count_tokens_renders_a_template_off_the_event_loop(
    client: anthropic.Anthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prompt up to `max_body_bytes` through a chat template and a tokenizer is seconds of
    CPU: on the event loop it would stall every other request meanwhile."""
    on_loop: list[bool] = []

    class Tokenizer:
        def render_chat(self, messages: Any, tools: Any) -> list[int]:
            try:
                asyncio.get_running_loop()
                on_loop.append(True)
            except RuntimeError:
                on_loop.append(False)
            return [1, 2, 3]

    async def declared(_: Dispatcher, name: str) -> Tokenizer:
        return Tokenizer()

    monkeypatch.setattr(Dispatcher, "declared_tokenizer", declared)
    raw = client.messages.with_raw_response.count_tokens(model="counted", messages=HI)

    assert raw.headers["x-turnout-token-count"] == "tokenizer"
    assert raw.parse().input_tokens == 3
    assert on_loop == [False]


def test_count_tokens_forwards_every_beta_line(
    server: RunningTurnout, claude: FakeAnthropicUpstream
) -> None:
    headers = [*HEADERS.items(), ("anthropic-beta", "one-1"), ("anthropic-beta", "two-2")]
    body = {"model": "sonnet", "messages": HI}
    answer = httpx.post(f"{server.url}/v1/messages/count_tokens", json=body, headers=headers)

    assert answer.status_code == 200
    sent = _sent(claude, "/v1/messages/count_tokens")[-1]
    assert sent.headers["anthropic-beta"] == "one-1, two-2"


def test_a_count_tokens_bug_is_answered_in_anthropics_envelope(
    client: anthropic.Anthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: Any) -> tuple[int, str]:
        raise RuntimeError("a bug")

    monkeypatch.setattr(messages_endpoints, "count_tokens", broken)
    with pytest.raises(anthropic.InternalServerError) as failed:
        client.messages.count_tokens(model="sonnet", messages=HI)

    assert failed.value.body == {
        "type": "error",
        "error": {"type": "api_error", "message": "Internal server error"},
    }
    assert failed.value.request_id


def _nested(depth: int) -> dict[str, Any]:
    deep: dict[str, Any] = {}
    for _ in range(depth):
        deep = {"a": deep}
    return deep


@pytest.mark.parametrize("model", ["sonnet", "open"])
def test_a_body_nested_deeper_than_can_be_sent_on_is_a_bad_request(
    client: anthropic.Anthropic,
    claude: FakeAnthropicUpstream,
    upstream: FakeOpenAIUpstream,
    model: str,
) -> None:
    """JSON nested 300 deep is read (orjson reads 1024 levels) but cannot be written again
    (orjson writes 255): refused as the client's mistake, never a 500 after a reservation."""
    tools: Any = [{"name": "f", "input_schema": {"type": "object", "properties": _nested(300)}}]
    history: Any = [
        *HI,
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": _nested(300)}],
        },
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}],
        },
    ]
    for request in ({"tools": tools, "messages": HI}, {"messages": history}):
        with pytest.raises(anthropic.BadRequestError) as refused:
            client.messages.create(model=model, max_tokens=8, **request)
        assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
        with pytest.raises(anthropic.BadRequestError):
            client.messages.count_tokens(model=model, **request)
    assert not claude.requests
    assert not [r for r in upstream.requests if r.method == "POST"]


@pytest.mark.parametrize("model", ["sonnet", "open"])
def test_a_body_nested_as_deep_as_allowed_is_answered(
    client: anthropic.Anthropic, model: str
) -> None:
    """The limit leaves room for what is built from a body a few levels deeper than it:
    the chat form's tools, the native body, the cache key (the cache is on here)."""
    schema = {"type": "object", "properties": _nested(MAX_DEPTH - 5)}
    body = {
        "model": model,
        "max_tokens": 8,
        "messages": HI,
        "tools": [{"name": "f", "input_schema": schema}],
    }
    assert not _nested_too_deeply(body)
    assert _nested_too_deeply({"one level more": body})

    message = client.messages.create(**body)
    assert message.content


def test_an_oversized_beta_header_is_refused_before_any_call(
    server: RunningTurnout, claude: FakeAnthropicUpstream
) -> None:
    body = {"model": "sonnet", "max_tokens": 8, "messages": HI}
    for betas in (["x" * 6000], ["y" * 600] * 10):
        headers = [*HEADERS.items(), *(("anthropic-beta", beta) for beta in betas)]
        for path in ("/v1/messages", "/v1/messages/count_tokens"):
            answer = httpx.post(f"{server.url}{path}", json=body, headers=headers)
            assert answer.status_code == 400, path
            assert answer.json()["error"]["type"] == "invalid_request_error"
            assert "anthropic-beta" in answer.json()["error"]["message"]
    assert not claude.requests


def test_the_cache_keeps_apart_requests_whose_chat_forms_are_equal(
    client: anthropic.Anthropic, claude: FakeAnthropicUpstream
) -> None:
    """Thinking budgets of 5000 and 10000 tokens are both `medium` effort in the chat
    form, and beta headers are no part of it: an Anthropic deployment is sent each as the
    client sent it, so one's answer is never another's."""

    def ask(budget: int, beta: str = "b-1") -> str:
        raw = client.messages.with_raw_response.create(
            model="sonnet",
            max_tokens=20000,
            thinking={"type": "enabled", "budget_tokens": budget},
            messages=HI,
            extra_headers={"anthropic-beta": beta},
        )
        return raw.headers["x-turnout-cache"]

    for text in ("first", "second", "third"):
        claude.enqueue(Reply(text=text))
    assert ask(5000) == "miss"
    assert ask(5000) == "hit"  # the cache is on: the same request is answered from it
    assert ask(10000) == "miss"
    assert ask(5000, beta="b-2") == "miss"
    assert [r.json["thinking"]["budget_tokens"] for r in _sent(claude, "/v1/messages")] == [
        5000,
        10000,
        5000,
    ]


def test_the_chat_door_refuses_the_same_nesting(server: RunningTurnout) -> None:
    """The bound is where every door reads its body (router/body.py); chat crashed too."""
    tools = [{"type": "function", "function": {"name": "f", "parameters": _nested(300)}}]
    body = {"model": "open", "messages": HI, "tools": tools}
    answer = httpx.post(
        f"{server.url}/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "invalid_json"
