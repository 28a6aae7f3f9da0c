"""`GET /metrics`: what a scraper sees after real requests through the SDK (answered, refused,
failed upstream, retried and failed over, streamed), parsed with prometheus_client's own
parser; and the series the policy layer feeds (breakers, limits, cache)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from policies.retry import Attempt
from router.metrics import Metrics, attempt_outcome
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok, Status
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[[dict[str, Any]], RunningTurnout]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
MESSAGES: list[Any] = [{"role": "user", "content": "hello there"}]
A, B = "a/a-model", "b/b-model"


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(turnout: RunningTurnout) -> Samples:
    """What a scraper sees; with the config's first admin key where it has one (as a
    scraper must present where keys are configured)."""
    admin = next((k.key for k in turnout.config.keys if k.admin), None)
    headers = {"authorization": f"Bearer {admin}"} if admin else {}
    with turnout.http(headers=headers) as http:
        response = http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def requests_total(samples: Samples, **labels: str) -> float:
    base = {"endpoint": "chat", "model": "m", "deployment": A, "status": "200", "outcome": "ok"}
    return value(samples, "turnout_requests_total", **(base | labels))


def test_counters_after_real_requests(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    server = turnout(
        simple_config({"a": upstream.base_url, "b": upstream_b.base_url}, breaker={"failures": 10})
    )
    client = server.client()

    whole = client.chat.completions.create(model="m", messages=MESSAGES)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="no-such-model", messages=MESSAGES)
    upstream.enqueue(Status(400))
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=MESSAGES)
    streamed = list(
        client.chat.completions.create(
            model="m",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    upstream.enqueue(Status(503), Status(503), Status(503))  # every try on a: b answers
    failed_over = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    assert failed_over.headers["x-turnout-deployment"] == B

    samples = scrape(server)
    assert requests_total(samples) == 2  # the whole answer and the stream
    assert requests_total(samples, deployment=B) == 1
    assert requests_total(samples, deployment=A, status="400", outcome="failed") == 1
    # An unknown model is refused before any plan: the client's string never becomes a label.
    assert requests_total(samples, model="", deployment="", status="404", outcome="rejected") == 1
    assert not any("no-such-model" in str(labels) for _, labels in samples)

    assert value(samples, "turnout_attempts_total", deployment=A, outcome="ok") == 2
    assert value(samples, "turnout_attempts_total", deployment=A, outcome="400") == 1
    assert value(samples, "turnout_attempts_total", deployment=A, outcome="503") == 3
    assert value(samples, "turnout_attempts_total", deployment=B, outcome="ok") == 1
    assert value(samples, "turnout_retries_total", deployment=A) == 2
    assert value(samples, "turnout_retries_total", deployment=B) == 0
    assert value(samples, "turnout_fallbacks_total", model="m") == 1

    histogram = "turnout_request_duration_seconds"
    assert value(samples, f"{histogram}_count", endpoint="chat", model="m") == 4
    assert value(samples, f"{histogram}_count", endpoint="chat", model="") == 1
    ttft = "turnout_time_to_first_token_seconds"
    assert value(samples, f"{ttft}_count", model="m", deployment=A) == 1
    assert 0 < value(samples, f"{ttft}_sum", model="m", deployment=A) < 5

    assert whole.usage is not None
    assert streamed[-1].usage is not None
    usage = failed_over.parse().usage
    assert usage is not None
    tokens = "turnout_tokens_total"
    prompt_a = whole.usage.prompt_tokens + streamed[-1].usage.prompt_tokens
    assert value(samples, tokens, model="m", deployment=A, kind="prompt") == prompt_a
    completion_a = whole.usage.completion_tokens + streamed[-1].usage.completion_tokens
    assert value(samples, tokens, model="m", deployment=A, kind="completion") == completion_a
    assert value(samples, tokens, model="m", deployment=B, kind="prompt") == usage.prompt_tokens


def test_metrics_want_an_admin_key_where_keys_are_required(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    """The series name every team's models: not for anyone who can reach the port."""
    keys = [{"key": "sk-right"}, {"key": "sk-admin-m", "admin": True}]
    server = turnout(simple_config({"a": upstream.base_url}, keys=keys))
    with server.http() as http:
        assert http.get("/v1/models", headers={"authorization": "Bearer sk-right"}).is_success
        anyone = http.get("/metrics")
        not_admin = http.get("/metrics", headers={"authorization": "Bearer sk-right"})
    assert (anyone.status_code, not_admin.status_code) == (401, 403)
    for refused in (anyone, not_admin):
        assert "turnout_" not in refused.text
        assert refused.json()["error"]["type"] in ("invalid_request_error", "permission_error")
    assert "turnout_requests_total" in parse_ok(server, "sk-admin-m").text


def test_metrics_may_be_made_public(turnout: StartTurnout, upstream: FakeOpenAIUpstream) -> None:
    config = simple_config(
        {"a": upstream.base_url}, keys=[{"key": "sk-right"}], metrics={"public": True}
    )
    server = turnout(config)
    with server.http() as http:
        assert http.get("/v1/models").status_code == 401
        plain = http.get("/metrics")
        openmetrics = http.get(
            "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"}
        )
    assert plain.status_code == 200
    assert "turnout_requests_total" in plain.text
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")


def parse_ok(server: RunningTurnout, key: str) -> httpx.Response:
    with server.http(headers={"authorization": f"Bearer {key}"}) as http:
        response = http.get("/metrics")
    assert response.status_code == 200
    return response


def test_policy_series() -> None:
    metrics = Metrics(process=False)
    metrics.breaker_state(A, "open")
    metrics.breaker_state(A, "open")  # reported again, not a transition
    metrics.breaker_state(A, "half_open")
    metrics.breaker_state(B, "closed")  # starts closed: not a transition either
    metrics.limit_rejected("team", "rpm")
    metrics.limit_rejected("team", "rpm")
    metrics.limit_rejected("key", "tpm")
    for result in ("hit", "miss", "miss", "bypass"):
        metrics.cache(result)

    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    samples = parse(body.decode())
    assert value(samples, "turnout_breaker_state", deployment=A) == 1
    assert value(samples, "turnout_breaker_state", deployment=B) == 0
    transitions = "turnout_breaker_transitions_total"
    assert value(samples, transitions, deployment=A, state="open") == 1
    assert value(samples, transitions, deployment=A, state="half_open") == 1
    assert value(samples, transitions, deployment=B, state="closed") == 0
    assert value(samples, "turnout_limit_rejections_total", scope="team", limit="rpm") == 2
    assert value(samples, "turnout_limit_rejections_total", scope="key", limit="tpm") == 1
    assert value(samples, "turnout_cache_requests_total", result="miss") == 2
    assert value(samples, "turnout_cache_requests_total", result="hit") == 1


@pytest.mark.parametrize(
    ("outcome", "status", "label"),
    [
        ("ok", 200, "ok"),
        ("503 server_error", 503, "503"),
        ("429 rate_limit_exceeded", 429, "429"),
        ("connect: Cannot connect to host 127.0.0.1:9 [Connection refused]", 502, "connect"),
        ("timeout: no response headers within 3s", 504, "timeout"),
        ("timeout: request deadline", 504, "timeout"),
        ("stream_broken: a: empty stream", 502, "stream_broken"),
        ("cancelled", 499, "cancelled"),
        ("something: new and unforeseen", 502, "error"),
    ],
)
def test_attempt_outcome_labels_are_bounded(outcome: str, status: int, label: str) -> None:
    assert attempt_outcome(Attempt(A, outcome, status, 1.0)) == label


def test_each_app_has_its_own_registry(turnout: StartTurnout, upstream: FakeOpenAIUpstream) -> None:
    first = turnout(simple_config({"a": upstream.base_url}))
    second = turnout(simple_config({"a": upstream.base_url}))
    first.client().chat.completions.create(model="m", messages=MESSAGES)
    upstream.enqueue(Ok())
    assert requests_total(scrape(first)) == 1
    assert requests_total(scrape(second)) == 0
