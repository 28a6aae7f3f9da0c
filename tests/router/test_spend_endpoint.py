"""`GET /v1/router/spend`: admins read what each team, key, model and deployment cost per
UTC day, from the spend each gateway flushes durably (SQLite for one replica, the shared
Redis for several) plus what it has not flushed yet. A real Turnout, the official SDK for
the requests, fake upstreams on loopback, a real redis-server."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from policies.config import TurnoutConfig
from router.gateway import Gateway
from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.manual_clock import ManualClock
from tests.redis_server import RedisServer
from tests.redis_server import redis_url as redis_url
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
MESSAGES: list[Any] = [{"role": "user", "content": "hello world"}]
ADMIN, MEMBER, LONER = "sk-admin-spend", "sk-member-spend", "sk-loner-spend"
PRICE = {"prompt": 2.0, "completion": 10.0}
COST = (2 * 2.0 + 3 * 10.0) / 1e6  # "hello world" -> "echo: hello world": 2 and 3 tokens
DAY = "2024-01-15"  # ManualClock's Monday


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def config(upstream: FakeOpenAIUpstream, **extra: Any) -> dict[str, Any]:
    built = simple_config(
        {"a": upstream.base_url},
        keys=[{"key": ADMIN, "admin": True}, {"key": LONER}],
        teams={"research": {"keys": [MEMBER]}, "idle": {"keys": []}},
        **extra,
    )
    built["models"]["m"]["deployments"][0]["price"] = PRICE
    return built


def ask(server: RunningTurnout, key: str, times: int = 1) -> None:
    with server.client(key) as client:
        for _ in range(times):
            client.chat.completions.create(model="m", messages=MESSAGES)


def spend(server: RunningTurnout, key: str | None = ADMIN, **query: str) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{server.url}/v1/router/spend", params=query, headers=headers)


def test_only_admins_read_spend(turnout: StartTurnout, upstream: FakeOpenAIUpstream) -> None:
    server = turnout(config(upstream), ManualClock())
    assert spend(server, None).status_code == 401
    refused = spend(server, MEMBER)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "admin_required"
    assert spend(server).status_code == 200


def test_spend_per_team_key_model_and_day(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    server = turnout(config(upstream), ManualClock())
    ask(server, MEMBER, 3)
    ask(server, LONER)
    answer = spend(server, team="research", period="day")
    assert answer.status_code == 200
    body = answer.json()
    assert (body["period"], body["start"], body["end"], body["team"]) == (
        "day",
        DAY,
        DAY,
        "research",
    )
    assert body["data"] == [
        {
            "day": DAY,
            "team": "research",
            "key": key_id(MEMBER),
            "model": "m",
            "deployment": "a/a-model",
            "usd": pytest.approx(3 * COST, abs=1e-12),
            "requests": 3,
            "prompt_tokens": 6,
            "completion_tokens": 9,
            "unpriced_requests": 0,
        }
    ]
    assert body["totals"] == {
        "usd": pytest.approx(3 * COST, abs=1e-12),
        "requests": 3,
        "prompt_tokens": 6,
        "completion_tokens": 9,
        "unpriced_requests": 0,
    }
    everyone = spend(server, period="week").json()  # since Monday: the same day here
    assert everyone["start"] == DAY
    assert {(row["team"], row["key"]) for row in everyone["data"]} == {
        ("research", key_id(MEMBER)),
        (None, key_id(LONER)),
    }
    assert everyone["totals"]["requests"] == 4
    assert spend(server, team="idle").json()["data"] == []  # configured, nothing spent
    month = spend(server, period="month").json()
    assert (month["start"], month["end"]) == ("2024-01-01", DAY)
    ranged = spend(server, start="2024-01-14", end="2024-01-16").json()
    assert ranged["period"] is None
    assert ranged["totals"]["requests"] == 4
    assert spend(server, start="2024-01-16", end="2024-01-20").json()["data"] == []


@pytest.mark.parametrize(
    ("query", "status", "param"),
    [
        ({"period": "year"}, 400, "period"),
        ({"start": "15/01/2024"}, 400, "start"),
        ({"start": "2024-01-15", "end": "2024-01-14"}, 400, "end"),
        ({"start": "2020-01-01", "end": "2024-01-14"}, 400, "start"),
        ({"period": "day", "start": "2024-01-15"}, 400, "period"),
        ({"team": "nobody"}, 404, "team"),
    ],
)
def test_bad_queries_are_refused_in_openais_envelope(
    turnout: StartTurnout,
    upstream: FakeOpenAIUpstream,
    query: dict[str, str],
    status: int,
    param: str,
) -> None:
    server = turnout(config(upstream), ManualClock())
    answer = spend(server, **query)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"


def test_spend_survives_a_restart_in_sqlite(upstream: FakeOpenAIUpstream, tmp_path: Path) -> None:
    stored = config(upstream, storage={"path": str(tmp_path)})
    first = RunningTurnout(stored, clock=ManualClock()).start()
    try:
        ask(first, MEMBER, 2)
    finally:
        first.stop()  # what was not flushed yet is flushed on close
    assert (tmp_path / "spend.sqlite3").exists()
    second = RunningTurnout(stored, clock=ManualClock()).start()
    try:
        ask(second, MEMBER)
        body = spend(second, team="research").json()
    finally:
        second.stop()
    assert body["totals"]["requests"] == 3
    assert body["totals"]["usd"] == pytest.approx(3 * COST, abs=1e-12)


def test_two_gateways_sharing_redis_add_to_one_spend(
    upstream: FakeOpenAIUpstream, redis_url: str, tmp_path: Path
) -> None:
    state = {"redis_url": redis_url, "prefix": f"test:{uuid.uuid4().hex}:"}

    def replica(name: str) -> RunningTurnout:
        shared = config(
            upstream, state=state, storage={"single_replica": True, "path": str(tmp_path / name)}
        )
        return RunningTurnout(shared, clock=ManualClock()).start()

    one, two = replica("one"), replica("two")
    try:
        ask(one, MEMBER, 2)
        ask(two, MEMBER, 3)
        ask(two, LONER)
        two.stop()  # flushed to Redis on close
        body = spend(one, team="research").json()  # one's own not flushed yet, or flushed
        assert body["totals"]["requests"] == 5
        assert body["totals"]["usd"] == pytest.approx(5 * COST, abs=1e-12)
        assert len(body["data"]) == 1
        assert spend(one).json()["totals"]["requests"] == 6
    finally:
        one.stop()
        two.stop()
    again = replica("three")  # a new replica reads it all from Redis
    try:
        assert spend(again).json()["totals"]["requests"] == 6
    finally:
        again.stop()


def test_a_reloaded_gateway_keeps_adding_to_the_same_spend(upstream: FakeOpenAIUpstream) -> None:
    """The spend book lives as long as the app: a reload's gateway takes its
    predecessor's, so nothing pending is lost or flushed twice."""
    first = Gateway.from_config(TurnoutConfig.model_validate(config(upstream)))
    again = Gateway.from_config(TurnoutConfig.model_validate(config(upstream)), previous=first)
    assert again.spend is first.spend
    assert Gateway.from_config(first.config).spend is not first.spend  # a new app's own


def test_an_unreachable_spend_store_is_a_503_that_names_no_address(
    upstream: FakeOpenAIUpstream, tmp_path: Path
) -> None:
    with RedisServer() as redis:
        address = redis.url.rsplit("@", 1)[-1].split("//")[-1]
        state = {"redis_url": redis.url, "prefix": f"test:{uuid.uuid4().hex}:"}
        shared = config(
            upstream, state=state, storage={"single_replica": True, "path": str(tmp_path)}
        )
        server = RunningTurnout(shared, clock=ManualClock()).start()
    try:  # the Redis is gone now
        refused = spend(server)
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "spend_unavailable"
        assert refused.headers["retry-after"] == "1"
        assert address not in refused.text
    finally:
        server.stop()
