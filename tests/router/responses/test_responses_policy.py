"""Policy applies to the Responses door as to a chat completion (it runs the same pipeline):
a team's limits refuse with OpenAI's 429 (its envelope, `Retry-After`, the rate-limit
headers), the token reservation counts `max_output_tokens`, the response cache answers a
repeated whole request (under a new response id, the turn stored) but never one that
continues a conversation nor a stream, and team rules route by a request's `metadata`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.router.responses.spec_checks import error_conforms, response_conforms
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
KEY = "sk-responses-policy"


def chat_calls(upstream: FakeOpenAIUpstream) -> int:
    return sum(r.path == "/v1/chat/completions" for r in upstream.requests)


def create(http: httpx.Client, **body: Any) -> httpx.Response:
    return http.post("/v1/responses", json={"model": "m", "input": "hello", **body})


def answered(reply: httpx.Response) -> dict[str, Any]:
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    response_conforms(body)
    return body


def served(turnout: StartTurnout, upstream: FakeOpenAIUpstream, **config: Any) -> httpx.Client:
    server = turnout(simple_config({"up": upstream.base_url}, **config))
    return server.http(headers={"authorization": f"Bearer {KEY}"})


# ---- limits ---------------------------------------------------------------------------------


def test_a_team_over_its_rpm_gets_openais_429(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    http = served(turnout, upstream, teams={"t": {"keys": [KEY], "limits": {"rpm": 2}}})

    first = create(http)
    answered(first)
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    answered(create(http))

    third = create(http)
    error = error_conforms(third, 429)["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert error["type"] == "requests"
    assert "requests per minute" in error["message"]
    assert int(third.headers["retry-after"]) > 0
    assert third.headers["x-ratelimit-remaining-requests"] == "0"
    assert chat_calls(upstream) == 2  # a refused request never reaches a backend
    # A stream is refused the same way, before any event.
    with http.stream(
        "POST", "/v1/responses", json={"model": "m", "input": "x", "stream": True}
    ) as s:
        s.read()
        error_conforms(s, 429)


def test_the_token_reservation_counts_max_output_tokens(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    http = served(turnout, upstream, teams={"t": {"keys": [KEY], "limits": {"tpm": 1000}}})

    answered(create(http, max_output_tokens=100))
    too_large = create(http, max_output_tokens=5000)  # more than a minute's tokens

    error = error_conforms(too_large, 429)["error"]
    assert error["code"] == "rate_limit_exceeded"
    assert "Request too large" in error["message"]
    assert "retry-after" not in too_large.headers  # waiting would not help
    assert chat_calls(upstream) == 1


# ---- cache ----------------------------------------------------------------------------------


def test_a_repeated_whole_request_is_answered_from_the_cache_under_a_new_id(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    http = served(turnout, upstream, teams={"t": {"keys": [KEY]}}, cache={"ttl": 60})

    first = create(http, input="cache me", instructions="Be brief.")
    second = create(http, input="cache me", instructions="Be brief.")

    assert first.headers["x-turnout-cache"] == "miss"
    assert second.headers["x-turnout-cache"] == "hit"
    assert chat_calls(upstream) == 1
    one, two = answered(first), answered(second)
    assert two["id"] != one["id"]
    assert two["output"][0]["content"][0]["text"] == one["output"][0]["content"][0]["text"]
    assert two["output"][0]["id"] != one["output"][0]["id"]  # items are the new response's
    # The cached answer is a turn of its own: stored, and continued from.
    kept = http.get(f"/v1/responses/{two['id']}")
    assert kept.status_code == 200, kept.text
    assert kept.json() == two
    answered(create(http, input="and then?", previous_response_id=two["id"]))


def test_a_request_continuing_a_conversation_is_never_a_cache_hit(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    http = served(turnout, upstream, teams={"t": {"keys": [KEY]}}, cache={"ttl": 60})
    start = answered(create(http, input="my name is Ada"))

    follow_ups = [create(http, input="who am I?", previous_response_id=start["id"]) for _ in "ab"]

    for reply in follow_ups:
        answered(reply)
        assert reply.headers.get("x-turnout-cache") != "hit"
    assert chat_calls(upstream) == 3


def test_a_stream_is_not_answered_from_the_cache(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    http = served(turnout, upstream, teams={"t": {"keys": [KEY]}}, cache={"ttl": 60})
    answered(create(http, input="cache me"))
    body = {"model": "m", "input": "cache me", "stream": True}
    with http.stream("POST", "/v1/responses", json=body) as streamed:
        streamed.read()
        assert streamed.status_code == 200
        assert streamed.headers.get("x-turnout-cache") != "hit"
    assert chat_calls(upstream) == 2


# ---- rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "deployment"),
    [({"tier": "batch"}, "b/local-model"), ({"tier": "interactive"}, "a/small"), (None, "a/small")],
    ids=["batch", "interactive", "none"],
)
def test_a_team_rule_routes_a_response_by_its_metadata(
    turnout: StartTurnout,
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
    metadata: dict[str, str] | None,
    deployment: str,
) -> None:
    rule = {"name": "batch", "when": {"metadata": {"tier": "batch"}}, "use": {"model": "local"}}
    config = simple_config(
        {"a": upstream.base_url, "b": upstream_b.base_url},
        models={
            "m": {"deployments": [{"provider": "a", "model": "small"}]},
            "local": {"deployments": [{"provider": "b", "model": "local-model"}]},
        },
        teams={"t": {"keys": [KEY], "models": ["m", "local"], "rules": [rule]}},
    )
    server = turnout(config)
    with server.http(headers={"authorization": f"Bearer {KEY}"}) as http:
        extra = {} if metadata is None else {"metadata": metadata}
        reply = create(http, **extra)

    response = answered(reply)
    assert reply.headers["x-turnout-deployment"] == deployment
    assert response["metadata"] == (metadata or {})
    sent = (upstream_b if deployment.startswith("b/") else upstream).requests[-1].json
    assert sent.get("metadata") == metadata
