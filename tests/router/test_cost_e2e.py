"""Each request's cost, from the usage its backends reported, summed over every billed
call, where the issue says it shows: the `x-turnout-cost-usd` header of a whole answer,
the usage chunk of a stream whose client asked for usage (`turnout.cost_usd`), the JSON log
line (`cost_usd`, `unpriced`) and `/metrics` (`turnout_spend_usd_total`,
`turnout_unpriced_requests_total`). A real Turnout in front of fake OpenAI and Anthropic
upstreams on loopback, the official SDKs as clients, exact figures."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from policies.rules import estimate_prompt_tokens
from tests.fakes.anthropic_upstream import FakeAnthropicUpstream, Reply
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok, StallMidStream, Status
from tests.fakes.replica_pool import ReplicaPool
from tests.router.batches.batch_helpers import finished, line, read_lines, start_batch
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
MESSAGES: list[Any] = [{"role": "user", "content": "hello world"}]
ADMIN, MEMBER = "sk-admin-cost-test", "sk-member-cost-test"
MEMBER_ID = hashlib.sha256(MEMBER.encode()).hexdigest()[:12]
# USD per million tokens, and per call.
PRICE_A = {"prompt": 2.0, "completion": 10.0, "per_request": 0.0001}
PRICE_B = {"prompt": 3.0, "completion": 15.0}
# The fake answers "echo: hello world" to "hello world": 2 prompt and 3 completion tokens.
COST_A = (2 * 2.0 + 3 * 10.0) / 1e6 + 0.0001  # 0.000134


def priced(
    upstreams: dict[str, str], prices: dict[str, dict[str, float] | None], **extra: Any
) -> dict[str, Any]:
    """Model `m` served by each upstream in order, each priced as `prices` says (None: no
    price); one admin key and one team's key."""
    config = simple_config(
        upstreams,
        keys=[{"key": ADMIN, "admin": True}],
        teams={"research": {"keys": [MEMBER]}},
        **extra,
    )
    for deployment in config["models"]["m"]["deployments"]:
        price = prices.get(deployment["provider"])
        if price is not None:
            deployment["price"] = price
    return config


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    with structlog.testing.capture_logs() as captured:
        yield captured


def request_line(logs: list[dict[str, Any]], index: int = -1) -> dict[str, Any]:
    return [entry for entry in logs if entry.get("event") == "request"][index]


def series(server: RunningTurnout, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    text = httpx.get(f"{server.url}/metrics", headers={"authorization": f"Bearer {ADMIN}"}).text
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    }


def spend_label(deployment: str, model: str = "m") -> tuple[tuple[str, str], ...]:
    labels = {"team": "research", "key": MEMBER_ID, "model": model, "deployment": deployment}
    return tuple(sorted(labels.items()))


def test_a_whole_answer_reports_its_cost_in_header_log_and_metrics(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, logs: list[dict[str, Any]]
) -> None:
    server = turnout(priced({"a": upstream.base_url}, {"a": PRICE_A}))
    with server.client(MEMBER) as client:
        raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
        raw.parse()
        second = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    assert raw.headers["x-turnout-cost-usd"] == "0.000134"
    assert float(second.headers["x-turnout-cost-usd"]) == pytest.approx(COST_A, abs=1e-12)
    line = request_line(logs)
    assert line["cost_usd"] == pytest.approx(COST_A, abs=1e-12)
    assert "unpriced" not in line
    spent = series(server, "turnout_spend_usd_total")
    assert spent[spend_label("a/a-model")] == pytest.approx(2 * COST_A, abs=1e-12)


def test_litestars_way_sends_the_same_cost_header(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    """A path spelled with a trailing slash is answered by the Litestar handler rather
    than the hot door: the same pipeline, the same header."""
    server = turnout(priced({"a": upstream.base_url}, {"a": PRICE_A}))
    body = {"model": "m", "messages": MESSAGES}
    auth = {"authorization": f"Bearer {MEMBER}"}
    with server.http() as http:
        hot = http.post("/v1/chat/completions", json=body, headers=auth)
        routed = http.post("/v1/chat/completions/", json=body, headers=auth)
    assert hot.status_code == routed.status_code == 200
    assert hot.headers["x-turnout-cost-usd"] == routed.headers["x-turnout-cost-usd"] == "0.000134"


def test_a_failed_attempt_the_upstream_refused_costs_nothing_and_the_fallback_is_priced(
    turnout: StartTurnout,
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
    logs: list[dict[str, Any]],
) -> None:
    upstream.set_default(Status(500))  # an error status: no upstream bills it
    server = turnout(
        priced({"a": upstream.base_url, "b": upstream_b.base_url}, {"a": PRICE_A, "b": PRICE_B})
    )
    with server.client(MEMBER) as client:
        raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    expected = (2 * 3.0 + 3 * 15.0) / 1e6
    assert raw.headers["x-turnout-deployment"] == "b/b-model"
    assert float(raw.headers["x-turnout-cost-usd"]) == pytest.approx(expected, abs=1e-12)
    assert request_line(logs)["cost_usd"] == pytest.approx(expected, abs=1e-12)
    spent = series(server, "turnout_spend_usd_total")
    assert spent == {spend_label("b/b-model"): pytest.approx(expected, abs=1e-12)}


def test_a_stream_broken_after_content_is_billed_with_its_continuation(
    turnout: StartTurnout,
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
    logs: list[dict[str, Any]],
) -> None:
    """The broken call produced tokens the upstream bills but never counted: it costs its
    estimate (prompt estimated, every completion token it allowed, as limits charge it);
    the continuation on the fallback costs the usage it reported."""
    target = "alpha beta gamma delta epsilon zeta"
    upstream.enqueue(StallMidStream(after_events=4, text=target))  # role + 3 words
    upstream_b.set_default(Ok(text=target, prefill=True))
    config = priced(
        {"a": upstream.base_url, "b": upstream_b.base_url},
        {"a": PRICE_A, "b": PRICE_B},
        timeouts={"connect": 2, "first_byte": 3, "stream_idle": 0.6, "total": 15},
    )
    for name in ("a", "b"):
        config["providers"][name]["capabilities"] = {"prefill": True}
    server = turnout(config)
    messages = [{"role": "user", "content": "say the words"}]
    with server.client(MEMBER) as client:
        chunks = list(
            client.chat.completions.create(
                model="m",
                messages=messages,  # type: ignore[arg-type]
                max_tokens=20,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    broken = (estimate_prompt_tokens({"messages": messages}) * 2.0 + 20 * 10.0) / 1e6 + 0.0001
    continued = ((3 + 3) * 3.0 + 3 * 15.0) / 1e6  # the prompt with the prefill, the rest
    extra = chunks[-1].model_extra
    assert extra is not None
    assert extra["turnout"]["cost_usd"] == pytest.approx(broken + continued, abs=1e-12)
    assert extra["turnout"]["continued"] == 1  # beside what the continuation says
    line = request_line(logs)
    assert line["cost_usd"] == pytest.approx(broken + continued, abs=1e-12)
    spent = series(server, "turnout_spend_usd_total")
    assert spent[spend_label("a/a-model")] == pytest.approx(broken, abs=1e-12)
    assert spent[spend_label("b/b-model")] == pytest.approx(continued, abs=1e-12)


def test_a_stream_carries_the_cost_only_when_usage_was_asked_for(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, logs: list[dict[str, Any]]
) -> None:
    server = turnout(priced({"a": upstream.base_url}, {"a": PRICE_A}))
    with server.client(MEMBER) as client:
        asked = client.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        chunks = list(asked.parse())
        plain = list(client.chat.completions.create(model="m", messages=MESSAGES, stream=True))
    assert "x-turnout-cost-usd" not in asked.headers  # sent before the cost is known
    usage = chunks[-1].usage
    assert usage is not None
    assert chunks[-1].choices == []
    assert not usage.model_extra  # OpenAI's usage, as a whole answer's
    assert chunks[-1].model_extra == {"turnout": {"cost_usd": pytest.approx(COST_A, abs=1e-12)}}
    assert all(c.usage is None for c in chunks[:-1])
    assert all(c.usage is None and "cost_usd" not in str(c) for c in plain)
    assert request_line(logs)["cost_usd"] == pytest.approx(COST_A, abs=1e-12)  # logged anyway
    assert series(server, "turnout_spend_usd_total")[spend_label("a/a-model")] == (
        pytest.approx(2 * COST_A, abs=1e-12)
    )


@pytest.mark.parametrize("stream", [False, True])
def test_emulated_n_sums_every_call(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, stream: bool
) -> None:
    config = priced({"a": upstream.base_url}, {"a": PRICE_A})
    config["providers"]["a"]["capabilities"] = {"n": False}  # fanned out: 4 calls
    server = turnout(config)
    with server.client(MEMBER) as client:
        if stream:
            chunks = list(
                client.chat.completions.create(
                    model="m",
                    messages=MESSAGES,
                    n=4,
                    stream=True,
                    stream_options={"include_usage": True},
                )
            )
            assert chunks[-1].usage is not None
            assert chunks[-1].model_extra is not None
            cost = chunks[-1].model_extra["turnout"]["cost_usd"]
        else:
            raw = client.chat.completions.with_raw_response.create(
                model="m", messages=MESSAGES, n=4
            )
            assert raw.headers["x-turnout-emulated"] == "n"
            cost = float(raw.headers["x-turnout-cost-usd"])
    assert sum(r.method == "POST" for r in upstream.requests) == 4
    assert cost == pytest.approx(4 * COST_A, abs=1e-12)  # per_request once per call


def test_a_cache_hit_costs_nothing(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, logs: list[dict[str, Any]]
) -> None:
    server = turnout(priced({"a": upstream.base_url}, {"a": PRICE_A}, cache={"ttl": 60}))
    with server.client(MEMBER) as client:
        first = client.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, temperature=0
        )
        hit = client.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, temperature=0
        )
    assert first.headers["x-turnout-cost-usd"] == "0.000134"
    assert hit.headers["x-turnout-cache"] == "hit"
    assert hit.headers["x-turnout-cost-usd"] == "0"
    assert request_line(logs)["cost_usd"] == 0
    assert series(server, "turnout_spend_usd_total")[spend_label("a/a-model")] == (
        pytest.approx(COST_A, abs=1e-12)
    )


def test_an_unpriced_deployment_is_reported_unpriced_never_zero(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, logs: list[dict[str, Any]]
) -> None:
    server = turnout(priced({"a": upstream.base_url}, {}))  # `a-model`: in no price table
    with server.client(MEMBER) as client:
        raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
        chunks = list(
            client.chat.completions.create(
                model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
            )
        )
    assert raw.headers["x-turnout-cost-usd"] == "unpriced"
    assert chunks[-1].usage is not None
    assert chunks[-1].model_extra == {"turnout": {"cost_usd": None}}
    for logged in (request_line(logs, 0), request_line(logs, 1)):
        assert logged["cost_usd"] is None
        assert logged["unpriced"] == ["a/a-model"]
    assert series(server, "turnout_spend_usd_total") == {}
    unpriced = series(server, "turnout_unpriced_requests_total")
    assert unpriced == {(("deployment", "a/a-model"), ("model", "m")): 2.0}


def test_cached_prompt_tokens_are_priced_as_cached(logs: list[dict[str, Any]]) -> None:
    """A vLLM-like replica with a prefix cache reports `cached_tokens`: those are priced at
    `cached_prompt`, the rest of the prompt at `prompt`."""
    price = {"prompt": 4.0, "cached_prompt": 1.0, "completion": 8.0}
    system = "Answer as a ship's navigator would, briefly and exactly. " * 12
    messages: list[Any] = [
        {"role": "system", "content": system},
        {"role": "user", "content": "Where are we?"},
    ]
    with ReplicaPool(1) as pool:
        server = RunningTurnout(priced({"a": pool.base_urls[0]}, {"a": price})).start()
        try:
            with server.client(MEMBER) as client:
                answers = [
                    client.chat.completions.with_raw_response.create(model="m", messages=messages)
                    for _ in range(2)
                ]
        finally:
            server.stop()
    for raw in answers:
        usage = raw.parse().usage
        assert usage is not None
        assert usage.prompt_tokens_details is not None
        cached = usage.prompt_tokens_details.cached_tokens or 0
        fresh = usage.prompt_tokens - cached
        expected = (fresh * 4.0 + cached * 1.0 + usage.completion_tokens * 8.0) / 1e6
        assert float(raw.headers["x-turnout-cost-usd"]) == pytest.approx(expected, abs=1e-12)
    second = answers[1].parse().usage
    assert second is not None
    assert second.prompt_tokens_details is not None
    assert second.prompt_tokens_details.cached_tokens  # the second read the cache


def test_anthropic_cache_reads_and_writes_are_priced_apart(logs: list[dict[str, Any]]) -> None:
    """Anthropic's usage: `input_tokens` fresh, `cache_read_input_tokens` at
    `cached_prompt`, `cache_creation_input_tokens` at `cache_write_prompt`; the same figure
    for an OpenAI client and for a Messages client (JSON and stream)."""
    price = {"prompt": 3.0, "cached_prompt": 0.3, "cache_write_prompt": 3.75, "completion": 15.0}
    cache = {"cache_creation_input_tokens": 40, "cache_read_input_tokens": 900}
    with FakeAnthropicUpstream() as claude:
        providers = {"claude": {"kind": "anthropic", "base_url": claude.base_url, "api_key": "k"}}
        models = {"m": {"deployments": [{"provider": "claude", "model": "claude-up"}]}}
        config = priced({}, {"claude": price}, providers=providers, models=models)
        server = RunningTurnout(config).start()
        try:
            claude.enqueue(*(Reply(text="ok fine", usage=cache) for _ in range(3)))
            with server.client(MEMBER) as client:
                raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
            answer = raw.parse()
            messages = anthropic.Anthropic(base_url=server.url, api_key=MEMBER, max_retries=0)
            message = messages.messages.with_raw_response.create(
                model="m", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
            )
            with messages.messages.stream(
                model="m", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
            ) as stream:
                final = stream.get_final_message()
        finally:
            server.stop()
    fresh = message.parse().usage.input_tokens
    output = message.parse().usage.output_tokens
    expected = (fresh * 3.0 + 900 * 0.3 + 40 * 3.75 + output * 15.0) / 1e6
    assert float(message.headers["x-turnout-cost-usd"]) == pytest.approx(expected, abs=1e-12)
    assert answer.usage is not None
    chat_fresh = answer.usage.prompt_tokens - 900 - 40
    chat_expected = (
        chat_fresh * 3.0 + 900 * 0.3 + 40 * 3.75 + answer.usage.completion_tokens * 15.0
    ) / 1e6
    assert float(raw.headers["x-turnout-cost-usd"]) == pytest.approx(chat_expected, abs=1e-12)
    assert final.usage.cache_read_input_tokens == 900
    streamed = (
        final.usage.input_tokens * 3.0 + 900 * 0.3 + 40 * 3.75 + final.usage.output_tokens * 15.0
    ) / 1e6
    line = request_line(logs)
    assert line["cost_usd"] == pytest.approx(streamed, abs=1e-12)


def test_batch_lines_are_priced_in_the_log_metrics_and_spend(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, logs: list[dict[str, Any]]
) -> None:
    """A batch line runs the one pipeline: its cost is logged, counted and kept as spend
    (its output line keeps OpenAI's shape: the answer's body, no cost)."""
    server = turnout(priced({"a": upstream.base_url}, {"a": PRICE_A}, batches={"poll_s": 0.1}))
    lines = [line(f"line{i} words") for i in range(3)]  # 2 prompt, 3 completion tokens each
    with server.client(MEMBER) as client:
        batch = finished(client, start_batch(client, lines).id)
        assert batch.status == "completed"
        outputs = read_lines(client, batch.output_file_id)
    assert all("cost_usd" not in json.dumps(out) for out in outputs)
    priced_lines = [e for e in logs if e.get("event") == "request" and "batch" in e]
    assert [e["cost_usd"] for e in priced_lines] == [pytest.approx(COST_A, abs=1e-12)] * 3
    spent = series(server, "turnout_spend_usd_total")
    assert spent[spend_label("a/a-model")] == pytest.approx(3 * COST_A, abs=1e-12)
    report = httpx.get(
        f"{server.url}/v1/router/spend", headers={"authorization": f"Bearer {ADMIN}"}
    ).json()
    assert report["totals"]["requests"] == 3
    assert report["totals"]["usd"] == pytest.approx(3 * COST_A, abs=1e-12)


def test_the_responses_door_reports_the_cost_of_a_whole_answer(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, logs: list[dict[str, Any]]
) -> None:
    server = turnout(priced({"a": upstream.base_url}, {"a": PRICE_A}))
    with server.client(MEMBER) as client:
        raw = client.responses.with_raw_response.create(model="m", input="hello world")
    assert raw.parse().output_text == "echo: hello world"
    assert raw.headers["x-turnout-cost-usd"] == "0.000134"
    assert request_line(logs)["cost_usd"] == pytest.approx(COST_A, abs=1e-12)


def test_an_error_answer_says_what_its_billed_calls_cost(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, logs: list[dict[str, Any]]
) -> None:
    """Every attempt refused with an error status (no upstream bills one): the error
    answer carries the header too, and says $0."""
    upstream.set_default(Status(500))
    server = turnout(priced({"a": upstream.base_url}, {"a": PRICE_A}))
    with server.http() as http:
        failed = http.post(
            "/v1/chat/completions",
            json={"model": "m", "messages": MESSAGES},
            headers={"authorization": f"Bearer {MEMBER}"},
        )
    assert failed.status_code >= 500
    assert failed.headers["x-turnout-cost-usd"] == "0"
    assert request_line(logs)["cost_usd"] == 0
