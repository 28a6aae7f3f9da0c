"""`GET /status.json`: what the status page shows, read from the state routing uses. A real
Turnout on loopback, fake upstreams that fail on cue, the official SDK for the traffic,
an injected clock for breakers and limits, and a real redis-server shared by two
replicas (the shared truth: one replica's breaker and limits are the other's)."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from policies.config import TurnoutConfig
from policies.storage.base import BatchRecord
from policies.storage.factory import open_storage
from router.gateway import Gateway
from router.status.data import snapshot
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok, Status
from tests.manual_clock import NOON, ManualClock
from tests.redis_server import redis_url as redis_url
from tests.router.test_reload import ReloadingTurnout, write
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
ADMIN, MEMBER, LONER = "sk-admin-status-0001", "sk-member-status-0002", "sk-loner-status-0003"
PRIMARY, FALLBACK = "primary/primary-model", "fallback/fallback-model"
MESSAGES: list[Any] = [{"role": "user", "content": "hello world"}]
PRICE = {"prompt": 2.0, "completion": 10.0}
KEYS = (ADMIN, MEMBER, LONER)
ONE_REPLICA = {"single_replica": True}  # batches are not what these tests share


def config(
    primary: FakeOpenAIUpstream, fallback: FakeOpenAIUpstream, **extra: Any
) -> dict[str, Any]:
    built = simple_config(
        {"primary": primary.base_url, "fallback": fallback.base_url},
        keys=[
            {"key": ADMIN, "admin": True, "name": "ops"},
            {"key": LONER, "limits": {"concurrency": 2}},
        ],
        teams={
            "research": {
                "keys": [MEMBER],
                "limits": {
                    "rpm": 100,
                    "tpm": 100_000,
                    "budget_tokens": {"tokens": 1_000_000, "per": "day"},
                    "budget_usd": {"usd": 5, "per": "month"},
                    "concurrency": 4,
                },
            }
        },
        breaker={"failures": 2, "cooldown": 30},
        retry={"attempts": 1},
        **extra,
    )
    for deployment in built["models"]["m"]["deployments"]:
        deployment["price"] = PRICE
    return built


def status(server: RunningTurnout, key: str = ADMIN) -> dict[str, Any]:
    got = httpx.get(f"{server.url}/status.json", headers={"authorization": f"Bearer {key}"})
    assert got.status_code == 200, got.text
    assert got.headers["cache-control"] == "no-store"
    body: dict[str, Any] = got.json()
    return body


def ask(server: RunningTurnout, key: str = MEMBER, times: int = 1, **extra: Any) -> None:
    with server.client(key) as client:
        for _ in range(times):
            client.chat.completions.create(model="m", messages=MESSAGES, **extra)


def until(
    read: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """`read()` again until `done` (writes made off the request's path land), at most 5 s."""
    deadline = time.monotonic() + 5.0
    body = read()
    while not done(body) and time.monotonic() < deadline:
        time.sleep(0.02)
        body = read()
    return body


def deployments(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["label"]: d for m in body["models"] for d in m["deployments"]}


def limits(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["kind"]: entry for entry in entries}


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def no_key_in(body: Any) -> None:
    text = str(body)
    for key in KEYS:
        assert key not in text


def test_breaker_opened_by_failures_shows_open_with_seconds_left(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    clock = ManualClock()
    server = turnout(config(upstream, upstream_b), clock)
    before = status(server)
    model = before["models"][0]
    assert model["name"] == "m"
    assert model["strategy"] == "priority"
    assert [d["label"] for d in model["deployments"]] == [PRIMARY, FALLBACK]  # plan order
    primary = deployments(before)[PRIMARY]
    assert primary["breaker"] == {"state": "closed", "open_for_s": None, "consecutive_failures": 0}
    assert (primary["provider"], primary["kind"], primary["in_flight"]) == ("primary", "openai", 0)
    assert primary["success_rate"] is None
    assert primary["latency_ms"]["p50"] is None

    upstream.set_default(Status(500))
    ask(server, times=3)  # two failures open the primary's breaker; the fallback answers all

    body = status(server)
    primary, fallback = deployments(body)[PRIMARY], deployments(body)[FALLBACK]
    assert primary["breaker"] == {"state": "open", "open_for_s": 30.0, "consecutive_failures": 2}
    assert (primary["calls"], primary["success_rate"]) == (2, 0.0)
    assert (fallback["calls"], fallback["success_rate"]) == (3, 1.0)
    assert fallback["breaker"]["state"] == "closed"
    latency = fallback["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"]
    assert latency["ewma"] > 0
    now_point = fallback["history"][-1]
    assert now_point["t"] == NOON
    assert now_point["calls"] == 3
    assert now_point["p50_ms"] > 0
    assert len(fallback["history"]) == 60
    assert body["history_step_s"] == 10.0
    assert primary["history"][-1]["failures"] == 2

    clock.advance(12)
    assert deployments(status(server))[PRIMARY]["breaker"]["open_for_s"] == 18.0
    clock.advance(19)  # past the cooldown: the next request may probe
    assert deployments(status(server))[PRIMARY]["breaker"]["state"] == "half_open"


def test_time_to_first_token_from_streams(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    server = turnout(config(upstream, upstream_b), ManualClock())
    with server.client(MEMBER) as client:
        for _ in range(2):
            for _ in client.chat.completions.create(model="m", messages=MESSAGES, stream=True):
                pass
    ttft = deployments(status(server))[PRIMARY]["ttft_ms"]
    assert 0 < ttft["p50"] <= ttft["p95"]
    assert ttft["ewma"] > 0
    assert ttft["p95_estimate"] > 0  # the shared estimate hedging reads


def test_limits_show_capacity_usage_and_reset_names_not_keys(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    server = turnout(config(upstream, upstream_b), ManualClock())
    ask(server, times=3)
    body = status(server)
    no_key_in(body)
    (team,) = body["teams"]
    assert team["name"] == "research"
    by_kind = limits(team["limits"])
    assert set(by_kind) == {"rpm", "tpm", "budget_tokens", "budget_usd", "concurrency"}
    rpm = by_kind["rpm"]
    assert (rpm["capacity"], rpm["used"], rpm["remaining"]) == (100, 3, 97)
    assert rpm["resets_at"] == NOON + rpm["reset_s"]
    assert rpm["reset_s"] > 0
    tokens = by_kind["tpm"]["used"]
    assert tokens > 0
    assert by_kind["budget_tokens"]["used"] == tokens  # both settled on usage
    budget = by_kind["budget_tokens"]
    assert budget["per"] == "day"
    assert budget["resets_at"] == NOON + 12 * 3600
    usd = by_kind["budget_usd"]
    assert usd["capacity"] == 5.0
    assert 0 < usd["used"] < 0.01  # dollars, not nano-dollars
    assert usd["remaining"] == pytest.approx(5.0 - usd["used"])
    assert by_kind["concurrency"] == {
        "kind": "concurrency",
        "capacity": 4,
        "per": None,
        "used": 0,
        "remaining": 4,
        "reset_s": None,
        "resets_at": None,
    }
    (member,) = team["keys"]
    assert member["name"] == member["key_id"]
    assert len(member["key_id"]) == 12  # unnamed: its id
    named = {k["name"]: k for k in body["keys"]}
    assert set(named) == {"ops", key_id(LONER)}
    assert named["ops"]["admin"] is True
    assert named["ops"]["limits"] == []


def test_calls_in_flight_and_concurrency_slots_held_while_a_request_runs(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    server = turnout(config(upstream, upstream_b), ManualClock())
    release = threading.Event()
    upstream.enqueue(Ok(delay=3.0))
    slow = threading.Thread(target=lambda: (ask(server, LONER), release.set()))
    slow.start()
    deadline = time.monotonic() + 10
    while (body := status(server)) and deployments(body)[PRIMARY]["in_flight"] != 1:
        assert time.monotonic() < deadline, "the slow request never showed in flight"
        time.sleep(0.02)
    (loner,) = [k for k in body["keys"] if k["name"] != "ops"]
    assert limits(loner["limits"])["concurrency"]["used"] == 1
    slow.join(timeout=10)
    body = status(server)
    assert deployments(body)[PRIMARY]["in_flight"] == 0
    (loner,) = [k for k in body["keys"] if k["name"] != "ops"]
    assert limits(loner["limits"])["concurrency"]["used"] == 0


def test_replicas_sharing_redis_show_the_same_breaker_and_limits(
    turnout: StartTurnout,
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
    redis_url: str,
) -> None:
    state = {"redis_url": redis_url, "prefix": f"test:{uuid.uuid4().hex}:"}
    clock = ManualClock()
    one = turnout(config(upstream, upstream_b, state=state, storage=ONE_REPLICA), clock)
    other = turnout(config(upstream, upstream_b, state=state, storage=ONE_REPLICA), clock)
    upstream.set_default(Status(500))
    ask(one, times=3)  # primary: two failures open its breaker; the fallback answers all
    ask(other, times=2)  # primary open for `other` too: the fallback answers both

    # The successes are recorded off the request's path: wait until all five are in.
    body = until(lambda: status(other), lambda b: deployments(b)[FALLBACK]["calls"] == 5)
    primary = deployments(body)[PRIMARY]
    assert primary["breaker"] == {"state": "open", "open_for_s": 30.0, "consecutive_failures": 2}
    assert (primary["calls"], primary["success_rate"]) == (2, 0.0)  # `one`'s failures
    assert deployments(body)[FALLBACK]["latency_ms"]["ewma"] > 0  # the shared EWMA
    rpm = limits(body["teams"][0]["limits"])["rpm"]
    assert (rpm["used"], rpm["remaining"]) == (5, 95)
    # Success rate, percentiles and the chart: the same from either replica.
    seen = status(one)
    for label in (PRIMARY, FALLBACK):
        mine, theirs = deployments(seen)[label], deployments(body)[label]
        for figure in ("calls", "success_rate", "latency_ms", "ttft_ms", "history"):
            assert mine[figure] == theirs[figure], (label, figure)
    fallback = deployments(body)[FALLBACK]
    assert fallback["success_rate"] == 1.0
    assert 0 < fallback["latency_ms"]["p50"] <= fallback["latency_ms"]["p95"]
    assert (fallback["history"][-1]["calls"], primary["history"][-1]["failures"]) == (5, 2)
    assert body["state_store"] == {
        "kind": "redis",
        "where": redis_url,
        "healthy": True,
        "error": None,
    }
    no_key_in(body)


def test_unreachable_redis_is_unhealthy_and_its_password_never_shown(
    upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    url = "redis://:hunter2-status-pass@127.0.0.1:9/0"  # the discard port: nothing answers
    server = RunningTurnout(
        config(upstream, upstream_b, state={"redis_url": url, "timeout": 0.2}, storage=ONE_REPLICA)
    )
    server.start(ready=False)
    try:
        body = status(server)
    finally:
        server.stop()
    store = body["state_store"]
    assert store["kind"] == "redis"
    assert store["healthy"] is False
    assert store["error"]
    assert store["where"] == "redis://127.0.0.1:9/0"
    assert "hunter2" not in str(body)
    primary = deployments(body)[PRIMARY]
    assert primary["breaker"]["state"] is None  # unknown, not made up
    assert (primary["calls"], primary["success_rate"], primary["history"]) == (None, None, None)
    assert limits(body["teams"][0]["limits"])["rpm"]["used"] is None


def test_memory_store_kind_and_health(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    body = status(turnout(config(upstream, upstream_b)))
    assert body["state_store"] == {
        "kind": "memory",
        "where": "memory",
        "healthy": True,
        "error": None,
    }
    assert body["object"] == "turnout.status"
    assert body["open_access"] is False


async def test_batches_in_progress_with_counts_and_nothing_the_client_wrote(
    upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream, tmp_path: Path
) -> None:
    settings = TurnoutConfig.model_validate(
        config(upstream, upstream_b, storage={"path": str(tmp_path)})
    )
    gateway = Gateway.from_config(settings, clock=ManualClock())
    storage = await open_storage(settings)
    admin_id = key_id(ADMIN)
    try:
        common = {"owner": "o", "key_id": admin_id, "endpoint": "/v1/chat/completions"}
        running = BatchRecord(
            id="batch_running",
            input_file_id="file_1",
            status="in_progress",
            created_at=int(NOON),
            expires_at=int(NOON) + 86400,
            total=10,
            metadata={"note": "client-free-text"},
            model="client-chosen-model",
            **common,
        )
        done = running.model_copy(update={"id": "batch_done", "status": "completed"})
        await storage.meta.put_batch(running)
        await storage.meta.put_batch(done)
        body = await snapshot(gateway, storage=storage)
    finally:
        await storage.aclose()
        await gateway.aclose()
    assert body["batches"] == [
        {
            "id": "batch_running",
            "status": "in_progress",
            "endpoint": "/v1/chat/completions",
            "created_at": int(NOON),
            "in_progress_at": None,
            "owner": "ops",
            "total": 10,
            "completed": 0,
            "failed": 0,
        }
    ]
    assert "client-free-text" not in str(body)
    assert "client-chosen-model" not in str(body)


def test_reloads_listed_newest_first_with_the_rejection_reason(
    tmp_path: Path, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    path = tmp_path / "turnout.yaml"
    first = config(upstream, upstream_b, storage={"path": str(tmp_path / "data")})
    write(path, first)
    server = ReloadingTurnout(path).start()
    try:
        assert server.reload("test-1")  # the same file: unchanged
        write(path, "models: [not, a, mapping")
        assert not server.reload("test-2")
        write(path, {**first, "breaker": {"failures": 3, "cooldown": 30}})
        assert server.reload("test-3")
        # The file watcher reloads too ("file_changed"): only the test's own are checked.
        reloads = [r for r in status(server)["reloads"] if r["trigger"].startswith("test-")]
    finally:
        server.stop()
    assert [(r["outcome"], r["trigger"]) for r in reloads] == [
        ("accepted", "test-3"),
        ("rejected", "test-2"),
        ("unchanged", "test-1"),
    ]
    assert reloads[1]["reason"]
    assert str(path) in reloads[1]["reason"]
    assert reloads[0]["reason"] is None
    assert all(r["at"] > 0 for r in reloads)


def test_snapshot_is_callable_without_an_app(
    upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    """The page renders from `snapshot(gateway)` too: no storage or reloader needed."""
    gateway = Gateway.from_config(TurnoutConfig.model_validate(config(upstream, upstream_b)))
    body = asyncio.run(snapshot(gateway))
    assert body["batches"] == []
    assert body["reloads"] == []
    assert [d["label"] for d in body["models"][0]["deployments"]] == [PRIMARY, FALLBACK]
