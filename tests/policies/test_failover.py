"""Retries, failover and the total deadline, end to end: the official openai SDK talks to a
real Turnout, which talks to scripted fake OpenAI upstreams on loopback."""

from __future__ import annotations

import itertools
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import openai
import pytest
from openai.types.chat import ChatCompletion

from tests.fakes.openai_upstream import (
    CutStream,
    FakeOpenAIUpstream,
    MalformedEvent,
    MidStreamError,
    Ok,
    Reset,
    Silence,
    Status,
    content_policy_violation,
    context_length_exceeded,
    rate_limited,
)
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[[dict[str, Any]], RunningTurnout]
MESSAGES: list[Any] = [{"role": "user", "content": "hi there"}]


@pytest.fixture
def upstream_c() -> Iterator[FakeOpenAIUpstream]:
    with FakeOpenAIUpstream() as fake:
        yield fake


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on: connecting to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ask(server: RunningTurnout, model: str = "m", **kwargs: Any) -> Any:
    """The SDK's raw response (headers, `.parse()`) to one chat completion."""
    with server.client() as client:
        return client.chat.completions.with_raw_response.create(
            model=model, messages=MESSAGES, **kwargs
        )


def answer(raw: Any) -> str | None:
    completion = raw.parse()
    assert isinstance(completion, ChatCompletion)
    return completion.choices[0].message.content


def fails(server: RunningTurnout, model: str = "m", **kwargs: Any) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as caught:
        ask(server, model, **kwargs)
    return caught.value


def message_of(error: openai.APIStatusError) -> str:
    """The envelope's `error.message` as Turnout sent it (the SDK's own message adds a prefix)."""
    assert isinstance(error.body, dict)
    message = error.body["message"]
    assert isinstance(message, str)
    return message


def models(*upstreams: FakeOpenAIUpstream) -> list[str]:
    return [r.json["model"] for up in upstreams for r in up.requests]


def two(up_a: FakeOpenAIUpstream, up_b: FakeOpenAIUpstream, **overrides: Any) -> dict[str, Any]:
    return simple_config({"a": up_a.base_url, "b": up_b.base_url}, **overrides)


# ---- what is retried on the same deployment ----------------------------------------------


def test_connect_refused_is_retried_then_the_next_deployment_answers(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, closed_port: int
) -> None:
    config = simple_config({"dead": f"http://127.0.0.1:{closed_port}/v1", "a": upstream.base_url})
    raw = ask(turnout(config))
    assert answer(raw) == "echo: hi there"
    assert raw.headers["x-turnout-deployment"] == "a/a-model"
    assert raw.headers["x-turnout-attempts"] == "4"  # 3 refused + 1 ok
    assert len(upstream.requests) == 1


def test_connect_refused_everywhere_names_each_attempt(
    turnout: StartTurnout, closed_port: int
) -> None:
    error = fails(turnout(simple_config({"dead": f"http://127.0.0.1:{closed_port}/v1"})))
    assert error.status_code == 502
    assert error.response.headers["x-turnout-attempts"] == "3"
    assert message_of(error).count("dead/dead-model: connect") == 3


def test_reset_is_retried_on_the_same_deployment(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(Reset(), Reset(), Ok(text="third time"))
    raw = ask(turnout(two(upstream, upstream_b)))
    assert answer(raw) == "third time"
    assert raw.headers["x-turnout-deployment"] == "a/a-model"
    assert raw.headers["x-turnout-attempts"] == "3"
    assert len(upstream.requests) == 3
    assert upstream_b.requests == []


@pytest.mark.parametrize("code", [408, 409, 429, 500, 502, 503, 504])
def test_retryable_status_is_retried_on_the_same_deployment(
    turnout: StartTurnout,
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
    code: int,
) -> None:
    upstream.enqueue(Status(code), Ok(text="second try"))
    raw = ask(turnout(two(upstream, upstream_b)))
    assert answer(raw) == "second try"
    assert raw.headers["x-turnout-deployment"] == "a/a-model"
    assert raw.headers["x-turnout-attempts"] == "2"
    assert len(upstream.requests) == 2
    assert upstream_b.requests == []


def test_429_without_retry_after_is_retried_with_backoff(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(rate_limited(), rate_limited(), Ok(text="finally"))
    config = simple_config(
        {"a": upstream.base_url},
        retry={"attempts": 3, "backoff_initial": 0.1, "backoff_max": 1},
    )
    raw = ask(turnout(config))
    assert answer(raw) == "finally"
    times = [r.time for r in upstream.requests]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.09  # backoff_initial
    assert times[2] - times[1] >= 0.19  # doubled


@pytest.mark.parametrize(
    ("limited", "wait"),
    [
        (rate_limited(retry_after="1"), 1.0),
        (rate_limited(retry_after_ms="600"), 0.6),
        (rate_limited(retry_after="0", retry_after_ms="700"), 0.7),
        (Status(503, headers={"retry-after": "1"}), 1.0),
    ],
    ids=["retry-after", "retry-after-ms", "ms-wins", "503-retry-after"],
)
def test_retry_after_is_honoured(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, limited: Status, wait: float
) -> None:
    upstream.enqueue(limited, Ok(text="after the wait"))
    raw = ask(turnout(simple_config({"a": upstream.base_url})))
    assert answer(raw) == "after the wait"
    first, second = upstream.requests
    assert second.time - first.time >= wait - 0.05  # never sooner than asked


def test_retry_after_past_the_cap_moves_on_to_the_next_deployment(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(rate_limited(retry_after="20"))
    config = two(
        upstream,
        upstream_b,
        retry={"attempts": 3, "backoff_initial": 0.01, "backoff_max": 0.05, "max_retry_after": 2},
    )
    started = time.monotonic()
    raw = ask(turnout(config))
    assert time.monotonic() - started < 10  # it did not wait the 20 s
    assert raw.headers["x-turnout-deployment"] == "b/b-model"
    assert raw.headers["x-turnout-attempts"] == "2"
    assert len(upstream.requests) == 1
    assert len(upstream_b.requests) == 1


def test_retry_budget_spent_moves_on_to_the_next_deployment(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Status(503))
    raw = ask(turnout(two(upstream, upstream_b)))
    assert answer(raw) == "echo: hi there"
    assert raw.headers["x-turnout-deployment"] == "b/b-model"
    assert raw.headers["x-turnout-attempts"] == "4"
    assert len(upstream.requests) == 3  # retry.attempts
    assert models(upstream_b) == ["b-model"]
    assert max(r.time for r in upstream.requests) <= upstream_b.requests[0].time


@pytest.mark.parametrize(
    "broken",
    [CutStream(), MidStreamError(), MalformedEvent()],
    ids=["cut-body", "error-in-200", "not-json-200"],
)
def test_a_broken_200_body_is_never_passed_on(
    turnout: StartTurnout,
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
    broken: CutStream | MidStreamError | MalformedEvent,
) -> None:
    upstream.enqueue(broken)
    raw = ask(turnout(two(upstream, upstream_b)))
    assert answer(raw) == "echo: hi there"
    assert raw.headers["x-turnout-attempts"] == "2"
    assert len(upstream.requests) + len(upstream_b.requests) == 2


# ---- what is never retried ---------------------------------------------------------------


@pytest.mark.parametrize("code", [400, 401, 403, 404])
def test_client_errors_are_not_retried(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, code: int
) -> None:
    upstream.set_default(Status(code, message=f"nope {code}"))
    error = fails(turnout(simple_config({"a": upstream.base_url})))
    assert f"nope {code}" in message_of(error)  # what the upstream said reaches the caller
    assert len(upstream.requests) == 1
    assert error.response.headers["x-turnout-attempts"] == "1"


def test_400_is_returned_as_is_without_trying_other_deployments(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(Status(400, message="bad 'temperature'", param="temperature", code_str="x"))
    error = fails(turnout(two(upstream, upstream_b)))
    assert isinstance(error, openai.BadRequestError)
    assert message_of(error) == "bad 'temperature'"
    assert (error.param, error.code, error.type) == ("temperature", "x", "invalid_request_error")
    assert len(upstream.requests) == 1
    assert upstream_b.requests == []


def test_context_length_exceeded_goes_straight_to_context_window_fallbacks(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.set_default(context_length_exceeded())
    config = two(
        upstream,
        upstream_b,
        models={
            "m": {
                "deployments": [
                    {"provider": "a", "model": "small-1"},
                    {"provider": "a", "model": "small-2"},
                ],
                "fallbacks": ["other"],
                "context_window_fallbacks": ["big"],
            },
            "other": {"deployments": [{"provider": "b", "model": "other-model"}]},
            "big": {"deployments": [{"provider": "b", "model": "big-model"}]},
        },
    )
    raw = ask(turnout(config))
    assert answer(raw) == "echo: hi there"
    assert models(upstream) == ["small-1"]  # no retry, no second small deployment
    assert models(upstream_b) == ["big-model"]  # no ordinary fallback either
    assert raw.headers["x-turnout-deployment"] == "b/big-model"
    assert raw.headers["x-turnout-model"] == "big"
    assert raw.headers["x-turnout-attempts"] == "2"


def test_context_length_exceeded_without_fallbacks_is_returned_as_is(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.set_default(context_length_exceeded())
    error = fails(turnout(simple_config({"a": upstream.base_url})))
    assert isinstance(error, openai.BadRequestError)
    assert error.code == "context_length_exceeded"
    assert error.param == "messages"
    assert message_of(error) == context_length_exceeded().message
    assert len(upstream.requests) == 1


def test_content_policy_violation_is_returned_as_is(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.set_default(content_policy_violation())
    config = two(
        upstream,
        upstream_b,
        models={
            "m": {
                "deployments": [{"provider": "a", "model": "a-model"}],
                "fallbacks": ["other"],
                "context_window_fallbacks": ["other"],
            },
            "other": {"deployments": [{"provider": "b", "model": "b-model"}]},
        },
    )
    error = fails(turnout(config))
    assert isinstance(error, openai.BadRequestError)
    assert message_of(error) == content_policy_violation().message
    assert (error.code, error.type) == ("content_policy_violation", "invalid_request_error")
    assert len(upstream.requests) == 1
    assert upstream_b.requests == []


# ---- the order of the plan ---------------------------------------------------------------


@pytest.mark.parametrize("order", [("a", "b"), ("b", "a")])
def test_deployments_are_tried_in_config_order(
    turnout: StartTurnout,
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
    order: tuple[str, str],
) -> None:
    config = two(
        upstream,
        upstream_b,
        models={"m": {"deployments": [{"provider": p, "model": f"{p}-model"} for p in order]}},
    )
    server = turnout(config)
    for _ in range(3):
        raw = ask(server)
        assert raw.headers["x-turnout-deployment"] == f"{order[0]}/{order[0]}-model"
    first, second = (upstream, upstream_b) if order[0] == "a" else (upstream_b, upstream)
    assert len(first.requests) == 3
    assert second.requests == []


def test_model_fallbacks_follow_the_models_deployments(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Status(500))
    config = two(
        upstream,
        upstream_b,
        models={
            "m": {
                "deployments": [
                    {"provider": "a", "model": "m-1"},
                    {"provider": "a", "model": "m-2"},
                ],
                "fallbacks": ["f1", "f2"],
            },
            "f1": {"deployments": [{"provider": "a", "model": "f1-model"}]},
            "f2": {"deployments": [{"provider": "b", "model": "f2-model"}]},
        },
    )
    raw = ask(turnout(config))
    assert answer(raw) == "echo: hi there"
    assert models(upstream) == ["m-1"] * 3 + ["m-2"] * 3 + ["f1-model"] * 3
    assert models(upstream_b) == ["f2-model"]
    assert raw.headers["x-turnout-model"] == "f2"
    assert raw.headers["x-turnout-deployment"] == "b/f2-model"
    assert raw.headers["x-turnout-attempts"] == "10"


def test_request_fallbacks_come_after_the_models_own(
    turnout: StartTurnout,
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
    upstream_c: FakeOpenAIUpstream,
) -> None:
    upstream.set_default(Status(503))
    upstream_b.set_default(Status(502))
    config = simple_config(
        {"a": upstream.base_url, "b": upstream_b.base_url, "c": upstream_c.base_url},
        models={
            "m": {"deployments": [{"provider": "a", "model": "a-model"}], "fallbacks": ["f"]},
            "f": {"deployments": [{"provider": "b", "model": "b-model"}]},
            "r": {"deployments": [{"provider": "c", "model": "c-model"}]},
        },
    )
    raw = ask(turnout(config), extra_body={"fallbacks": ["r"]})
    assert answer(raw) == "echo: hi there"
    assert raw.headers["x-turnout-model"] == "r"
    assert raw.headers["x-turnout-deployment"] == "c/c-model"
    assert raw.headers["x-turnout-attempts"] == "7"
    arrivals = [r.time for up in (upstream, upstream_b, upstream_c) for r in up.requests]
    assert arrivals == sorted(arrivals)  # a, then f on b, then r on c
    assert models(upstream_c) == ["c-model"]
    # Turnout's own field is never forwarded to a backend
    for request in [*upstream.requests, *upstream_b.requests, *upstream_c.requests]:
        assert "fallbacks" not in request.json


def test_request_fallbacks_are_not_used_when_the_model_answers(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    config = two(
        upstream,
        upstream_b,
        models={
            "m": {"deployments": [{"provider": "a", "model": "a-model"}]},
            "r": {"deployments": [{"provider": "b", "model": "b-model"}]},
        },
    )
    raw = ask(turnout(config), extra_body={"fallbacks": ["r"]})
    assert raw.headers["x-turnout-deployment"] == "a/a-model"
    assert upstream_b.requests == []
    assert "fallbacks" not in upstream.requests[0].json


def test_unknown_request_fallback_is_a_400(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    error = fails(
        turnout(simple_config({"a": upstream.base_url})), extra_body={"fallbacks": ["m", "nope"]}
    )
    assert isinstance(error, openai.BadRequestError)
    assert error.param == "fallbacks[1]"
    assert error.code == "model_not_found"
    assert "nope" in message_of(error)
    assert upstream.requests == []


def test_final_error_names_every_attempt(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Status(503))
    upstream_b.enqueue(Reset(), Status(502), Status(500, message="b is down"))
    error = fails(turnout(two(upstream, upstream_b)))
    assert isinstance(error, openai.InternalServerError)
    assert error.status_code == 500  # the last failure's
    assert "b is down" in message_of(error)
    assert error.response.headers["x-turnout-attempts"] == "6"
    tried = message_of(error).split("attempt(s): ", 1)[1]
    parts = tried.rstrip(")").split("; ")
    assert len(parts) == 6
    assert parts[:3] == ["a/a-model: 503 server_error"] * 3
    assert parts[3].startswith("b/b-model: connect")
    assert parts[4:] == ["b/b-model: 502 server_error", "b/b-model: 500 server_error"]


def test_final_429_keeps_retry_after_for_the_client(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.set_default(rate_limited(retry_after_ms="10"))
    error = fails(turnout(simple_config({"a": upstream.base_url})))
    assert isinstance(error, openai.RateLimitError)
    assert error.code == "rate_limit_exceeded"
    assert error.response.headers["retry-after"] == "1"
    assert len(upstream.requests) == 3


# ---- the total deadline ------------------------------------------------------------------


def deadline_config(
    up: FakeOpenAIUpstream, *, total: float, first_byte: float = 3
) -> dict[str, Any]:
    timeouts = {"connect": 2, "first_byte": first_byte, "stream_idle": 2, "total": total}
    return simple_config({"a": up.base_url}, timeouts=timeouts)


def test_silent_upstream_gets_a_504_at_the_total_deadline(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Silence())
    server = turnout(deadline_config(upstream, total=1.5, first_byte=10))
    started = time.monotonic()
    error = fails(server)
    elapsed = time.monotonic() - started
    assert error.status_code == 504
    assert 1.4 <= elapsed < 6  # not before the deadline, and not hanging past it
    assert "deadline" in message_of(error)


def test_deadline_error_names_the_attempt_it_cut_short(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Silence())
    error = fails(turnout(deadline_config(upstream, total=1, first_byte=10)))
    assert error.status_code == 504
    assert "a/a-model" in message_of(error)
    assert error.response.headers["x-turnout-attempts"] == "1"


def test_first_byte_timeout_bounds_one_attempt_then_the_next_deployment_answers(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Silence())
    timeouts = {"connect": 2, "first_byte": 1, "stream_idle": 2, "total": 15}
    started = time.monotonic()
    raw = ask(turnout(two(upstream, upstream_b, timeouts=timeouts)))
    elapsed = time.monotonic() - started
    assert raw.headers["x-turnout-deployment"] == "b/b-model"
    assert raw.headers["x-turnout-attempts"] == "2"
    assert len(upstream.requests) == 1  # a timeout moves on; it is not retried
    assert 0.95 <= elapsed < 6


def test_total_deadline_bounds_retries_too(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.set_default(rate_limited(retry_after="1"))
    config = simple_config(
        {"a": upstream.base_url},
        timeouts={"connect": 2, "first_byte": 3, "stream_idle": 2, "total": 2.5},
        retry={"attempts": 10, "backoff_initial": 0.01, "backoff_max": 0.05},
    )
    started = time.monotonic()
    error = fails(turnout(config))
    assert time.monotonic() - started < 6
    assert isinstance(error, openai.RateLimitError)
    times = [r.time for r in upstream.requests]
    assert 2 <= len(times) <= 3
    assert all(b - a >= 0.95 for a, b in itertools.pairwise(times))
