"""What only the Redis store has: a namespace, TTLs on every key, a server that can be
unreachable (every operation then raises `StateUnavailable`, within its timeout)."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import redis.exceptions
from redis.asyncio import Redis

from policies.policy_config import StateSettings
from policies.state.base import BreakerPolicy, Limit, LimitKind, StateStore, StateUnavailable
from policies.state.factory import build_store
from policies.state.fail_open import FailOpenStore
from policies.state.memory import MemoryStore
from policies.state.redis_store import RedisStore
from tests.redis_server import RedisServer

T0 = 1_700_000_000.25


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_every_key_is_namespaced_and_expires(redis_url: str, raw: Redis) -> None:
    prefix = f"ttl-test-{uuid.uuid4().hex}:"
    store = RedisStore.from_url(redis_url, prefix=prefix)
    policy = BreakerPolicy(failure_rate=0.5)
    limits = [
        Limit("rpm", LimitKind.RATE, capacity=10, period_s=60.0),
        Limit("usd", LimitKind.BUDGET, capacity=10, period_s=60.0, period_end=T0 + 60),
    ]
    await store.admit(limits, [1, 1], T0)
    await store.breaker_record("d", policy, False, T0)
    await store.observe_latency("d", 0.5, alpha=0.1)
    await store.add_in_flight("d", 1)
    await store.cache_set("c", b"v", ttl_s=60)
    await store.aclose()

    keys = sorted([k.decode() async for k in raw.scan_iter(match=f"{prefix}*")])
    assert keys == [
        f"{prefix}cache:c",
        f"{prefix}in_flight",
        f"{prefix}latency",
        f"{prefix}{{deployment:d}}:breaker",
        f"{prefix}{{deployment:d}}:breaker:window",
        f"{prefix}{{rpm}}:rate:rpm",
        f"{prefix}{{usd}}:budget:usd:{T0 + 60:.3f}",
    ]
    ttls = {k: await raw.pttl(k) for k in keys}
    assert all(ttl > 0 for ttl in ttls.values()), ttls
    assert ttls[f"{prefix}{{rpm}}:rate:rpm"] <= 2 * 60_000
    assert ttls[f"{prefix}{{usd}}:budget:usd:{T0 + 60:.3f}"] <= 120_000


def every_operation(store: StateStore) -> dict[str, Callable[[], Awaitable[object]]]:
    """One call of each operation of the contract, by name."""
    limits = [Limit("rpm", LimitKind.RATE, capacity=10, period_s=60.0)]
    policy = BreakerPolicy()
    return {
        "admit": lambda: store.admit(limits, [1], T0),
        "charge": lambda: store.charge(limits, [1], T0),
        "peek": lambda: store.peek(limits, T0),
        "breaker_acquire": lambda: store.breaker_acquire("d", policy, T0),
        "breaker_record": lambda: store.breaker_record("d", policy, False, T0, probe=True),
        "breaker_release": lambda: store.breaker_release("d", T0),
        "breaker_views": lambda: store.breaker_views(["d"], policy, T0),
        "observe_latency": lambda: store.observe_latency("d", 0.5, alpha=0.1),
        "latencies": lambda: store.latencies(["d"]),
        "add_in_flight": lambda: store.add_in_flight("d", 1),
        "in_flight": lambda: store.in_flight(["d"]),
        "cache_get": lambda: store.cache_get("c"),
        "cache_set": lambda: store.cache_set("c", b"v", ttl_s=60),
        "ping": store.ping,
    }


async def test_every_operation_raises_state_unavailable_when_redis_is_down() -> None:
    with RedisServer() as server:
        store = RedisStore.from_url(server.url)
        await store.ping()
        server.stop()
        for name, call in every_operation(store).items():
            with pytest.raises(StateUnavailable, match="redis: ") as caught:
                await call()
            assert isinstance(caught.value.__cause__, redis.exceptions.ConnectionError), name
        await store.aclose()


async def test_a_server_that_does_not_answer_times_out_at_once() -> None:
    """A black hole (a socket that never answers): each call waits `timeout_s` once, never
    redis-py's default of 10 tries with backoff."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)
        port = listening.getsockname()[1]
        store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0", timeout_s=0.2)
        started = time.perf_counter()
        with pytest.raises(StateUnavailable) as caught:
            await store.admit([Limit("rpm", LimitKind.RATE, 10, 60.0)], [1], T0)
        assert 0.15 < time.perf_counter() - started < 1.0
        assert isinstance(caught.value.__cause__, redis.exceptions.TimeoutError)
        await store.aclose()


async def test_a_restarted_redis_is_used_again_at_once() -> None:
    """Its pooled connections broke with the old server: the first command on each is
    tried again on a new connection, so no caller sees the restart."""
    with RedisServer() as server:
        store = RedisStore.from_url(server.url)
        await asyncio.gather(*(store.cache_set(f"k{i}", b"v", 60) for i in range(5)))
        server.stop()
        with pytest.raises(StateUnavailable):
            await store.cache_get("k0")
        server.start(port=server.port)
        assert await asyncio.gather(*(store.cache_get(f"k{i}") for i in range(5))) == [None] * 5
        await store.aclose()


async def test_build_store_chooses_by_url(redis_url: str) -> None:
    assert isinstance(build_store(StateSettings()), MemoryStore)
    store = build_store(StateSettings(redis_url=redis_url))
    assert isinstance(store, FailOpenStore)
    await store.ping()
    await store.aclose()
    unreachable = build_store(StateSettings(redis_url="redis://127.0.0.1:1/0"))
    with pytest.raises(StateUnavailable):  # start-up must still see it
        await unreachable.ping()
    await unreachable.aclose()
