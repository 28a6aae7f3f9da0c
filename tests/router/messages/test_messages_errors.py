"""Every error class through the official `anthropic` SDK: Turnout's refusals and its
deployments' failures reach an Anthropic client with Anthropic's status, its envelope
`{"type": "error", "error": {"type", "message"}}` and a `request-id` header (the SDK's
`request_id`), so the SDK raises the matching exception; a stream that breaks after its
first events ends with an `error` event, which the SDK raises, never a silent end."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.fakes.behaviors import CutStream, Status, context_length_exceeded
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.turnout_server import RunningTurnout, simple_config

KEY, SLOW, STRICT = "sk-errors", "sk-errors-slow", "sk-errors-strict"
MAX_BODY = 16384
HI: list[Any] = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIUpstream]:
    with FakeOpenAIUpstream() as fake:
        yield fake


@pytest.fixture(scope="module")
def overloaded() -> Iterator[FakeOpenAIUpstream]:
    with FakeOpenAIUpstream() as fake:
        fake.set_default(Status(503))
        yield fake


@pytest.fixture(scope="module")
def broken() -> Iterator[FakeOpenAIUpstream]:
    with FakeOpenAIUpstream() as fake:
        fake.set_default(Status(500))
        yield fake


@pytest.fixture(scope="module")
def server(
    upstream: FakeOpenAIUpstream, overloaded: FakeOpenAIUpstream, broken: FakeOpenAIUpstream
) -> Iterator[RunningTurnout]:
    upstreams = {"up": upstream.base_url, "down": overloaded.base_url, "bad": broken.base_url}
    models = {
        name: {"deployments": [{"provider": provider, "model": f"{provider}-model"}]}
        for name, provider in (("m", "up"), ("busy", "down"), ("failing", "bad"))
    }
    config = simple_config(
        upstreams,
        models=models,
        keys=[{"key": KEY}],
        teams={
            "slow": {"keys": [SLOW], "limits": {"rpm": 1}},
            "strict": {"keys": [STRICT], "models": ["m"], "allow_router_options": False},
        },
        server={"max_body_bytes": MAX_BODY},
    )
    running = RunningTurnout(config).start()
    yield running
    running.stop()


def sdk(server: RunningTurnout, key: str = KEY) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key=key, max_retries=0, timeout=20)


@pytest.fixture
def client(server: RunningTurnout, upstream: FakeOpenAIUpstream) -> Iterator[anthropic.Anthropic]:
    upstream.reset()
    with sdk(server) as client:
        yield client


def in_envelope(error: anthropic.APIStatusError, status: int, kind: str) -> str:
    """The error's message, once its status, envelope and request id are Anthropic's."""
    assert error.status_code == status
    body: Any = error.body
    assert set(body) == {"type", "error"}
    assert body["type"] == "error"
    assert body["error"]["type"] == kind
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    assert error.request_id is not None
    assert error.request_id.startswith("req_")
    assert error.request_id == error.response.headers["x-request-id"]
    message: str = body["error"]["message"]
    return message


def test_400_a_bad_parameter_is_a_bad_request(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="m", max_tokens=0, messages=HI)
    assert "max_tokens" in in_envelope(caught.value, 400, "invalid_request_error")

    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="m", max_tokens=5, messages=[])
    assert "messages" in in_envelope(caught.value, 400, "invalid_request_error")


def test_400_the_backends_own_refusal_is_a_bad_request(
    client: anthropic.Anthropic, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(context_length_exceeded())
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="m", max_tokens=5, messages=HI)
    assert "context length" in in_envelope(caught.value, 400, "invalid_request_error")


def test_401_an_unknown_key_is_an_authentication_error(server: RunningTurnout) -> None:
    for client in (
        sdk(server, "sk-nobody"),
        anthropic.Anthropic(base_url=server.url, auth_token="sk-nobody", max_retries=0),
    ):
        with client:
            with pytest.raises(anthropic.AuthenticationError) as caught:
                client.messages.create(model="m", max_tokens=5, messages=HI)
            in_envelope(caught.value, 401, "authentication_error")
            with pytest.raises(anthropic.AuthenticationError):
                client.messages.count_tokens(model="m", messages=HI)


def test_403_a_team_that_may_not_choose_deployments(server: RunningTurnout) -> None:
    """The door's one 403: a team with `allow_router_options: false` sending `router`
    options (a model outside a team's list is a 404, as on the OpenAI side)."""
    with sdk(server, STRICT) as client, pytest.raises(anthropic.PermissionDeniedError) as caught:
        client.messages.create(
            model="m", max_tokens=5, messages=HI, extra_body={"router": {"only": ["up"]}}
        )
    assert "router" in in_envelope(caught.value, 403, "permission_error")


def test_404_an_unknown_model_or_one_outside_the_team(
    client: anthropic.Anthropic, server: RunningTurnout
) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        client.messages.create(model="claude-nowhere-1", max_tokens=5, messages=HI)
    assert "claude-nowhere-1" in in_envelope(caught.value, 404, "not_found_error")
    with pytest.raises(anthropic.NotFoundError):
        client.messages.count_tokens(model="claude-nowhere-1", messages=HI)

    with sdk(server, STRICT) as strict, pytest.raises(anthropic.NotFoundError) as caught:
        strict.messages.create(model="busy", max_tokens=5, messages=HI)
    in_envelope(caught.value, 404, "not_found_error")


def test_413_a_body_over_the_limit(client: anthropic.Anthropic) -> None:
    big = [{"role": "user", "content": "x" * (MAX_BODY + 1)}]
    with pytest.raises(anthropic.ContentTooLargeError) as caught:
        client.messages.create(model="m", max_tokens=5, messages=big)  # type: ignore[arg-type]
    assert str(MAX_BODY) in in_envelope(caught.value, 413, "request_too_large")


def test_429_the_teams_requests_per_minute(
    server: RunningTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.reset()
    with sdk(server, SLOW) as client:
        client.messages.create(model="m", max_tokens=5, messages=HI)
        with pytest.raises(anthropic.RateLimitError) as caught:
            client.messages.create(model="m", max_tokens=5, messages=HI)
    in_envelope(caught.value, 429, "rate_limit_error")
    assert caught.value.response.headers.get("retry-after")


def test_500_every_deployment_failing(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.InternalServerError) as caught:
        client.messages.create(model="failing", max_tokens=5, messages=HI)
    assert type(caught.value) is anthropic.InternalServerError
    in_envelope(caught.value, 500, "api_error")


def test_529_every_deployment_overloaded(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.OverloadedError) as caught:
        client.messages.create(model="busy", max_tokens=5, messages=HI)
    in_envelope(caught.value, 529, "overloaded_error")

    with (
        pytest.raises(anthropic.OverloadedError) as caught,
        client.messages.stream(model="busy", max_tokens=5, messages=HI) as stream,
    ):
        stream.get_final_message()
    in_envelope(caught.value, 529, "overloaded_error")


async def test_the_async_client_raises_the_same_classes(server: RunningTurnout) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=server.url, api_key=KEY, max_retries=0, timeout=20
    ) as client:
        with pytest.raises(anthropic.NotFoundError) as caught:
            await client.messages.create(model="claude-nowhere-1", max_tokens=5, messages=HI)
        in_envelope(caught.value, 404, "not_found_error")
        with pytest.raises(anthropic.OverloadedError):
            async with client.messages.stream(model="busy", max_tokens=5, messages=HI) as stream:
                await stream.get_final_message()


def test_a_stream_broken_after_its_first_events_ends_with_an_error_event(
    client: anthropic.Anthropic, upstream: FakeOpenAIUpstream
) -> None:
    # Every attempt breaks: nothing is left to continue the stream with.
    upstream.set_default(CutStream(after_events=3, pause=0.05))
    seen: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        client.messages.stream(model="m", max_tokens=50, messages=HI) as stream,
    ):
        seen.extend(event.type for event in stream)

    assert seen[:2] == ["message_start", "content_block_start"]
    assert "content_block_delta" in seen
    assert "message_stop" not in seen
    body: Any = caught.value.body
    assert body["type"] == "error"
    assert body["error"]["type"] == "api_error"
