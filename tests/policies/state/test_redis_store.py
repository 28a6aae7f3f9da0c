"""What only the Redis store has: a namespace, TTLs on every key, a reachable server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
import redis.exceptions
from redis.asyncio import Redis

from policies.state.base import BreakerPolicy, Limit, LimitKind
from policies.state.factory import build_store
from policies.state.memory import MemoryStore
from policies.state.redis_store import RedisStore

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
        f"{prefix}breaker:d",
        f"{prefix}breaker:d:window",
        f"{prefix}budget:usd:{T0 + 60:.3f}",
        f"{prefix}cache:c",
        f"{prefix}in_flight",
        f"{prefix}latency",
        f"{prefix}rate:rpm",
    ]
    ttls = {k: await raw.pttl(k) for k in keys}
    assert all(ttl > 0 for ttl in ttls.values()), ttls
    assert ttls[f"{prefix}rate:rpm"] <= 2 * 60_000
    assert ttls[f"{prefix}budget:usd:{T0 + 60:.3f}"] <= 120_000


async def test_ping_fails_when_redis_is_unreachable() -> None:
    store = RedisStore.from_url("redis://127.0.0.1:1/0")
    with pytest.raises(redis.exceptions.ConnectionError):
        await store.ping()
    await store.aclose()


async def test_build_store_chooses_by_url(redis_url: str) -> None:
    assert isinstance(build_store(None), MemoryStore)
    store = build_store(redis_url)
    assert isinstance(store, RedisStore)
    await store.ping()
    await store.aclose()
