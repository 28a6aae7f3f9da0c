"""The shared store unreachable, end to end: a real Turnout on a real redis-server that is
stopped mid-test. Requests are still served (breakers read closed, statistics and cache
are skipped), limits admit unchecked or answer 503 per `state.limits_when_unavailable`,
the outage is counted in /metrics and logged once, not per request; once Redis is back
(a new, empty one on the same port) limits, cache and breakers work again. A store that is
unreachable at start-up still fails readiness."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
import structlog

from policies.config import TurnoutConfig
from router.gateway import Gateway
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok, Status
from tests.redis_server import RedisServer
from tests.router.test_metrics import scrape, value
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
Logs = list[dict[str, Any]]
LIMITED = "sk-limited"  # 2 requests a minute
UNLIMITED = "sk-unlimited"
ADMIN = "sk-admin"
PRIMARY = "primary/primary-model"
FALLBACK = "fallback/fallback-model"


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    """A Redis of this test's own, to stop and start again."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def logs() -> Iterator[Logs]:
    with structlog.testing.capture_logs() as captured:
        yield captured


def outage_config(
    redis: RedisServer, primary: FakeOpenAIUpstream, fallback: FakeOpenAIUpstream, **state: Any
) -> dict[str, Any]:
    return simple_config(
        {"primary": primary.base_url, "fallback": fallback.base_url},
        keys=[
            {"key": LIMITED, "limits": {"rpm": 2}},
            {"key": UNLIMITED},
            {"key": ADMIN, "admin": True},
        ],
        breaker={"failures": 1, "cooldown": 60},
        retry={"attempts": 1},
        cache={"ttl": 60},
        state={"redis_url": redis.url, "timeout": 0.2, **state},
        storage={"single_replica": True},
    )


def json_body(text: str) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


def ask(server: RunningTurnout, key: str, text: str = "hi") -> httpx.Response:
    with server.http() as http:
        return http.post(
            "/v1/chat/completions", headers={"authorization": f"Bearer {key}"}, json=json_body(text)
        )


def calls(upstream: FakeOpenAIUpstream) -> int:
    return sum(r.path == "/v1/chat/completions" for r in upstream.requests)


def test_routing_fails_open_while_redis_is_down_and_recovers(
    turnout: StartTurnout,
    redis: RedisServer,
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
    logs: Logs,
) -> None:
    primary, fallback = upstream, upstream_b
    server = turnout(outage_config(redis, primary, fallback))
    before = ask(server, LIMITED, "before")
    assert before.status_code == 200
    assert before.headers["x-ratelimit-remaining-requests"] == "1"

    redis.stop()
    primary.set_default(Status(503))
    during = [ask(server, LIMITED, "same question") for _ in range(4)]

    # Over the rpm limit, yet admitted: limits cannot be checked and the default is allow.
    assert [r.status_code for r in during] == [200] * 4
    assert all("x-ratelimit-remaining-requests" not in r.headers for r in during)
    # Breakers read closed: the failing primary is tried each time, never skipped.
    assert {r.headers["x-turnout-deployment"] for r in during} == {FALLBACK}
    assert calls(primary) == 1 + 4
    # The cache misses and stores nothing: the same question reaches a backend each time.
    assert {r.headers["x-turnout-cache"] for r in during} == {"miss"}
    assert calls(fallback) == 4

    samples = scrape(server)
    for operation in ("admit", "breaker_acquire", "breaker_record", "cache_get", "cache_set"):
        assert value(samples, "turnout_state_errors_total", operation=operation) >= 4, operation
    warnings = [entry for entry in logs if entry["event"] == "state_store_unavailable"]
    assert len(warnings) == 1  # not one per request, nor per operation
    assert not [entry for entry in logs if entry["event"] == "unhandled_error"]
    with server.http() as http:
        explained = http.post(
            "/v1/router/explain",
            headers={"authorization": f"Bearer {ADMIN}"},
            json={"endpoint": "chat", "key": LIMITED, "request": json_body("hi")},
        ).json()
    assert [d["breaker"] for d in explained["deployments"]] == ["closed", "closed"]
    assert explained["limits"] == [
        {
            "limit": "rpm:key",
            "kind": "rate",
            "capacity": 2,
            "remaining": None,
            "reset_s": None,
            "over": None,
            "state": "unavailable",
        }
    ]

    redis.start(port=redis.port)  # back, and empty
    primary.set_default(Ok())
    assert [ask(server, LIMITED, f"after {i}").status_code for i in range(3)] == [200, 200, 429]
    # Each key outside a team has its own cache entries: a miss, then a hit.
    assert ask(server, UNLIMITED, "after 0").headers["x-turnout-cache"] == "miss"
    assert ask(server, UNLIMITED, "after 0").headers["x-turnout-cache"] == "hit"
    primary.set_default(Status(503))
    assert ask(server, UNLIMITED, "opens it").headers["x-turnout-deployment"] == FALLBACK
    assert ask(server, UNLIMITED, "skips it").headers["x-turnout-attempts"] == "1"
    assert calls(primary) == 1 + 4 + 2 + 1 + 1
    assert [entry["event"] for entry in logs].count("state_store_available") == 1


def test_limits_refuse_while_redis_is_down_when_told_to(
    turnout: StartTurnout,
    redis: RedisServer,
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
) -> None:
    config = outage_config(redis, upstream, upstream_b, limits_when_unavailable="refuse")
    server = turnout(config)
    redis.stop()

    refused = ask(server, LIMITED)
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    error = refused.json()["error"]
    assert (error["type"], error["code"]) == ("server_error", "state_unavailable")
    with server.client(LIMITED) as client, pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.code == "state_unavailable"
    # A key without limits needs no check: served, failing open like everything else.
    assert ask(server, UNLIMITED).status_code == 200
    assert calls(upstream) == 1

    redis.start(port=redis.port)
    assert ask(server, LIMITED).status_code == 200


async def test_readiness_fails_when_redis_is_unreachable_at_start_up(
    redis: RedisServer, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    """Most likely a wrong URL: caught before any traffic, not failed open."""
    redis.stop()
    config = TurnoutConfig.model_validate(outage_config(redis, upstream, upstream_b))
    gateway = Gateway.from_config(config)
    await gateway.begin_start()
    assert not gateway.ready
    assert gateway.startup_error is not None
    assert gateway.startup_error.startswith(f"state store ({redis.url}): redis: ")
    await gateway.aclose()


async def test_the_readiness_error_never_shows_the_redis_password(
    redis: RedisServer, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    """`/health/ready` answers without a key, so its error must not carry credentials."""
    redis.stop()
    raw = outage_config(redis, upstream, upstream_b)
    raw["state"]["redis_url"] = f"redis://:hunter2-secret@127.0.0.1:{redis.port}/0"
    gateway = Gateway.from_config(TurnoutConfig.model_validate(raw))
    await gateway.begin_start()
    assert gateway.startup_error is not None
    assert f"127.0.0.1:{redis.port}" in gateway.startup_error
    assert "hunter2" not in gateway.startup_error
    await gateway.aclose()
