"""`FailOpenStore` over a real Redis that goes away mid-test: what each operation answers
while it is down, that every error is counted but only one warning per few seconds is
logged, and that it is used again (and says so) once Redis is back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from policies.state.base import BreakerPolicy, BreakerState, BreakerView, StateUnavailable
from policies.state.fail_open import LOG_EVERY_S, FailOpenStore
from policies.state.redis_store import RedisStore
from tests.manual_clock import ManualClock
from tests.policies.state.test_redis_store import T0, every_operation
from tests.redis_server import RedisServer

POLICY = BreakerPolicy(failures=1, cooldown_s=5.0)
CLOSED = BreakerView(BreakerState.CLOSED, allowed=True)
Logs = list[dict[str, Any]]


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer() as running:
        yield running


@pytest.fixture
def logs() -> Iterator[Logs]:
    with structlog.testing.capture_logs() as captured:
        yield captured


def events(logs: Logs, name: str) -> Logs:
    return [entry for entry in logs if entry["event"] == name]


async def test_while_redis_is_down_routing_reads_fail_open(server: RedisServer) -> None:
    errors: list[str] = []
    store = FailOpenStore(RedisStore.from_url(server.url), errors.append)
    await store.breaker_record("d", POLICY, False, T0)  # open, while Redis is up
    assert not (await store.breaker_acquire("d", POLICY, T0)).allowed
    await store.cache_set("c", b"cached", 60)
    server.stop()

    assert await store.breaker_acquire("d", POLICY, T0) == CLOSED
    assert await store.breaker_record("d", POLICY, False, T0, probe=True) == CLOSED
    assert await store.breaker_views(["d", "e"], POLICY, T0) == {"d": CLOSED, "e": CLOSED}
    assert await store.cache_get("c") is None
    await store.cache_set("c", b"new", 60)
    await store.charge([], [], T0)
    await store.breaker_release("d", T0)
    await store.observe_latency("d", 0.1, 0.5)
    await store.add_in_flight("d", 1)
    assert errors == [
        *("breaker_acquire", "breaker_record", "breaker_views", "cache_get", "cache_set"),
        *("charge", "breaker_release", "observe_latency", "add_in_flight"),
    ]
    await store.aclose()


async def test_decisions_that_are_the_callers_are_raised_to_it(server: RedisServer) -> None:
    errors: list[str] = []
    store = FailOpenStore(RedisStore.from_url(server.url), errors.append)
    server.stop()
    raised = ["admit", "peek", "latencies", "in_flight", "ping"]

    for name, call in every_operation(store).items():
        if name in raised:
            with pytest.raises(StateUnavailable):
                await call()
        else:
            await call()
    assert errors == [name for name in every_operation(store) if name != "ping"]
    await store.aclose()


async def test_one_warning_per_few_seconds_and_a_note_on_recovery(
    server: RedisServer, logs: Logs
) -> None:
    clock = ManualClock(0.0)
    store = FailOpenStore(RedisStore.from_url(server.url), clock=clock)
    server.stop()

    for _ in range(20):
        await store.breaker_acquire("d", POLICY, T0)
    clock.advance(LOG_EVERY_S - 0.1)
    await store.cache_get("c")
    assert [e["operation"] for e in events(logs, "state_store_unavailable")] == ["breaker_acquire"]
    clock.advance(0.1)
    await store.cache_get("c")
    warnings = events(logs, "state_store_unavailable")
    assert [(w["operation"], w["unlogged_since_last"]) for w in warnings] == [
        ("breaker_acquire", 0),
        ("cache_get", 20),
    ]
    assert all(w["log_level"] == "warning" for w in warnings)
    assert not events(logs, "state_store_available")

    server.start(port=server.port)
    await store.cache_set("c", b"v", 60)
    assert await store.cache_get("c") == b"v"
    assert len(events(logs, "state_store_available")) == 1
    await store.aclose()


async def test_breakers_work_again_once_redis_is_back(server: RedisServer) -> None:
    store = FailOpenStore(RedisStore.from_url(server.url))
    server.stop()
    assert await store.breaker_record("d", POLICY, False, T0) == CLOSED  # not recorded

    server.start(port=server.port)
    opened = await store.breaker_record("d", POLICY, False, T0)
    assert (opened.state, opened.allowed) == (BreakerState.OPEN, False)
    assert not (await store.breaker_acquire("d", POLICY, T0 + 1)).allowed
    await store.aclose()
