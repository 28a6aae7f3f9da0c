"""Traces of real requests (policies/telemetry/): a real Turnout exports over OTLP/HTTP to
a real receiver on loopback, which decodes the protobufs; fake upstreams record the
`traceparent` they were sent."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok, StallMidStream, Status
from tests.router.telemetry.otlp_receiver import OTLPReceiver
from tests.router.telemetry.traced import children, exported, one, telemetry, traceparent_of
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[[dict[str, Any]], RunningTurnout]
CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as running:
        yield running


def test_a_plain_request_is_a_server_span_with_one_client_span_sent_on_as_traceparent(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, receiver: OTLPReceiver
) -> None:
    upstream.set_default(Ok(text="hello there"))
    server = turnout(
        simple_config({"a": upstream.base_url}, telemetry=telemetry(receiver.endpoint))
    )
    with server.client() as client:
        answer = client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "secret prompt"}],
            max_tokens=50,
            temperature=0.5,
        )
    assert answer.choices[0].message.content == "hello there"
    spans = exported(server, receiver, 2)
    request, attempt = one(spans, "server"), one(spans, "client")
    assert request.name == "chat m"
    assert request.parent_id == ""  # no traceparent from the client: a new trace
    assert request.resource["service.name"] == "turnout"
    assert request.attributes["gen_ai.operation.name"] == "chat"
    assert request.attributes["gen_ai.request.model"] == "m"
    assert request.attributes["gen_ai.request.max_tokens"] == 50
    assert request.attributes["gen_ai.request.temperature"] == 0.5
    assert request.attributes["gen_ai.usage.input_tokens"] == answer.usage.prompt_tokens
    assert request.attributes["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens
    assert request.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert request.attributes["gen_ai.response.model"] == answer.model
    assert request.attributes["http.response.status_code"] == 200
    assert request.attributes["turnout.deployment"] == "a/a-model"
    assert request.attributes["turnout.cache"] == "none"
    assert request.attributes["turnout.attempts"] == 1
    assert "error.type" not in request.attributes

    assert attempt.name == "chat a-model"
    assert (attempt.trace_id, attempt.parent_id) == (request.trace_id, request.span_id)
    assert attempt.attributes["gen_ai.provider.name"] == "openai"
    assert attempt.attributes["gen_ai.request.model"] == "a-model"
    assert attempt.attributes["turnout.attempt.reason"] == "first"
    assert attempt.attributes["turnout.attempt.outcome"] == "ok"
    assert attempt.attributes["gen_ai.usage.output_tokens"] == answer.usage.completion_tokens
    # Content only when asked for (`capture_content`); never a URL of the upstream.
    assert not any(k.startswith("gen_ai.input") or k.startswith("gen_ai.output") for k in
                   attempt.attributes)  # fmt: skip
    assert not any("127.0.0.1" in str(v) for s in spans for v in s.attributes.values())
    # The upstream saw the attempt span as its parent.
    assert traceparent_of(upstream.requests[-1].headers) == (attempt.trace_id, attempt.span_id)
    assert request.start_ns <= attempt.start_ns <= attempt.end_ns <= request.end_ns


def test_retries_a_failover_and_a_cache_hit_each_say_what_they_were(
    turnout: StartTurnout,
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
    receiver: OTLPReceiver,
) -> None:
    upstream.enqueue(Status(500), Status(503), Status(500))  # every retry of `a` fails
    upstream_b.set_default(Ok(text="from b"))
    config = simple_config(
        {"a": upstream.base_url, "b": upstream_b.base_url},
        telemetry=telemetry(receiver.endpoint),
        cache={"ttl": 60},
    )
    server = turnout(config)
    ask: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with server.client() as client:
        first = client.chat.completions.create(**ask)
        again = client.chat.completions.create(**ask)
    assert first.choices[0].message.content == again.choices[0].message.content == "from b"
    spans = exported(server, receiver, 6)
    requests = sorted((s for s in spans if s.kind == "server"), key=lambda s: s.start_ns)
    assert len(requests) == 2
    missed, hit = requests
    attempts = children(spans, missed)
    assert [a.attributes["turnout.deployment"] for a in attempts] == ["a/a-model"] * 3 + [
        "b/b-model"
    ]
    assert [a.attributes["turnout.attempt.reason"] for a in attempts] == [
        "first", "retry", "retry", "fallback",
    ]  # fmt: skip
    assert [a.attributes["turnout.attempt.outcome"] for a in attempts] == [
        "error", "error", "error", "ok",
    ]  # fmt: skip
    assert [a.attributes.get("error.type") for a in attempts] == ["500", "503", "500", None]
    assert [a.status for a in attempts] == [2, 2, 2, 0]
    assert attempts[1].attributes["turnout.attempt.previous_deployment"] == "a/a-model"
    assert "500" in attempts[1].attributes["turnout.attempt.previous_error"]
    assert attempts[3].attributes["turnout.attempt.previous_deployment"] == "a/a-model"
    assert [a.attributes["turnout.attempt.number"] for a in attempts] == [1, 2, 3, 4]
    assert missed.attributes["turnout.cache"] == "miss"
    assert missed.attributes["turnout.deployment"] == "b/b-model"
    assert missed.attributes["turnout.attempts"] == 4
    assert hit.attributes["turnout.cache"] == "hit"
    assert hit.attributes["turnout.outcome"] == "cache_hit"
    assert children(spans, hit) == []  # nothing was called
    assert hit.trace_id != missed.trace_id


def test_a_stream_continued_mid_answer_has_a_continuation_span(
    turnout: StartTurnout,
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
    receiver: OTLPReceiver,
) -> None:
    words = "alpha beta gamma delta epsilon zeta"
    upstream.enqueue(StallMidStream(after_events=4, text=words))  # role + 3 words, then silent
    upstream_b.set_default(Ok(text=words, prefill=True))
    config = simple_config(
        {"a": upstream.base_url, "b": upstream_b.base_url},
        timeouts={"connect": 2, "first_byte": 3, "stream_idle": 0.6, "total": 15},
        telemetry=telemetry(receiver.endpoint),
    )
    for name in ("a", "b"):
        config["providers"][name]["capabilities"] = {"prefill": True}
    server = turnout(config)
    text = ""
    with server.client() as client:
        stream = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "say"}], stream=True
        )
        for chunk in stream:
            text += "".join(c.delta.content or "" for c in chunk.choices)
    assert text == words
    spans = exported(server, receiver, 3)
    request = one(spans, "server")
    broken, continued = children(spans, request)
    assert broken.attributes["turnout.deployment"] == "a/a-model"
    assert broken.attributes["turnout.attempt.reason"] == "first"
    assert broken.attributes["turnout.attempt.outcome"] == "error"
    assert broken.attributes["error.type"] == "timeout"
    assert continued.attributes["turnout.deployment"] == "b/b-model"
    assert continued.attributes["turnout.attempt.reason"] == "continuation"
    assert continued.attributes["turnout.attempt.outcome"] == "ok"
    assert continued.attributes["turnout.attempt.previous_deployment"] == "a/a-model"
    assert continued.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert request.attributes["turnout.continued"] == 1
    assert broken.end_ns <= continued.start_ns  # the stream broke, then was continued
    assert traceparent_of(upstream_b.requests[-1].headers) == (
        continued.trace_id,
        continued.span_id,
    )


def test_a_client_traceparent_continues_its_trace_down_to_the_upstream(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, receiver: OTLPReceiver
) -> None:
    upstream.set_default(Ok(text="hi"))
    server = turnout(
        simple_config({"a": upstream.base_url}, telemetry=telemetry(receiver.endpoint))
    )
    sent = {
        "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01",
        "tracestate": "vendor=opaque",
    }
    with server.client(default_headers=sent) as client:
        client.embeddings.create(model="m", input=["one", "two"])
    spans = exported(server, receiver, 2)
    request, attempt = one(spans, "server"), one(spans, "client")
    assert (request.trace_id, request.parent_id) == (CLIENT_TRACE, CLIENT_SPAN)
    assert request.name == "embeddings m"
    assert request.attributes["gen_ai.operation.name"] == "embeddings"
    assert (attempt.trace_id, attempt.parent_id) == (CLIENT_TRACE, request.span_id)
    assert attempt.name == "embeddings a-model"
    seen = upstream.requests[-1].headers
    assert traceparent_of(seen) == (CLIENT_TRACE, attempt.span_id)
    assert seen["tracestate"] == "vendor=opaque"


def test_content_is_captured_only_when_asked(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, receiver: OTLPReceiver
) -> None:
    upstream.set_default(Ok(text="the answer"))
    server = turnout(
        simple_config(
            {"a": upstream.base_url},
            telemetry=telemetry(receiver.endpoint, capture_content=True),
        )
    )
    with server.client() as client:
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "the question"}]
        )
    attempt = one(exported(server, receiver, 2), "client")
    assert '"content":"the question"' in attempt.attributes["gen_ai.input.messages"]
    assert '"content":"the answer"' in attempt.attributes["gen_ai.output.messages"]


def test_the_anthropic_door_and_a_refused_request_have_server_spans(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, receiver: OTLPReceiver
) -> None:
    upstream.set_default(Ok(text="hi"))
    config = simple_config({"a": upstream.base_url}, telemetry=telemetry(receiver.endpoint))
    config["keys"] = [{"key": "sk-right-key-0123456789"}]
    server = turnout(config)
    ask = {"model": "m", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    with server.http() as http:
        headers = {"x-api-key": "sk-right-key-0123456789", "anthropic-version": "2023-06-01"}
        assert http.post("/v1/messages", json=ask, headers=headers).status_code == 200
        refused = http.post("/v1/messages", json=ask, headers={**headers, "x-api-key": "no"})
        assert refused.status_code == 401
    spans = exported(server, receiver, 3)
    servers = sorted((s for s in spans if s.kind == "server"), key=lambda s: s.start_ns)
    assert [s.attributes["turnout.endpoint"] for s in servers] == ["messages", "messages"]
    assert servers[0].name == "chat m"
    assert servers[0].attributes["gen_ai.request.max_tokens"] == 20
    assert one(spans, "client").parent_id == servers[0].span_id
    assert servers[1].attributes["http.response.status_code"] == 401
    assert servers[1].attributes["error.type"] == "rejected"
    assert not any("sk-right" in str(v) for s in spans for v in s.attributes.values())
    assert httpx.get(f"{server.url}/health/live").status_code == 200


def test_a_hedge_is_its_own_span_and_the_loser_is_cancelled(
    turnout: StartTurnout,
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
    receiver: OTLPReceiver,
) -> None:
    upstream.enqueue(Ok(text="slow answer", first_delay=60))
    upstream_b.enqueue(Ok(text="fast answer"))
    config = simple_config(
        {"a": upstream.base_url, "b": upstream_b.base_url},
        hedge={"after": 0.2},
        telemetry=telemetry(receiver.endpoint),
    )
    server = turnout(config)
    with server.client() as client:
        stream = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "fast answer"
    spans = exported(server, receiver, 3)
    request = one(spans, "server")
    slow, hedge = children(spans, request)
    assert slow.attributes["turnout.deployment"] == "a/a-model"
    assert slow.attributes["turnout.attempt.outcome"] == "cancelled"
    assert hedge.attributes["turnout.deployment"] == "b/b-model"
    assert hedge.attributes["turnout.attempt.reason"] == "hedge"
    assert hedge.attributes["turnout.attempt.outcome"] == "ok"
    assert request.attributes["turnout.deployment"] == "b/b-model"
    assert traceparent_of(upstream.requests[-1].headers)[1] == slow.span_id
    assert traceparent_of(upstream_b.requests[-1].headers)[1] == hedge.span_id


def test_the_server_span_carries_the_request_cost_when_priced(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, receiver: OTLPReceiver
) -> None:
    upstream.set_default(Ok(text="hello there"))
    config = simple_config({"a": upstream.base_url}, telemetry=telemetry(receiver.endpoint))
    deployment = config["models"]["m"]["deployments"][0]
    deployment["price"] = {"prompt": 1_000_000.0, "completion": 2_000_000.0}  # $1, $2 a token
    server = turnout(config)
    with server.client() as client:
        answer = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}]
        )
    request = one(exported(server, receiver, 2), "server")
    usage = answer.usage
    assert usage is not None
    expected = usage.prompt_tokens * 1.0 + usage.completion_tokens * 2.0
    assert request.attributes["turnout.cost_usd"] == pytest.approx(expected)
