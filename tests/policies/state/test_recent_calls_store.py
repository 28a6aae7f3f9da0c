"""`record_call` / `recent_calls`: each deployment's last finished calls, kept in the store
for the status page, in every store, across replicas: read back oldest first, only those
after `since`, capped per deployment, and (Redis) under the deployment's hash tag."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from policies.state.base import RECENT_CALLS_CAP, CallSample, StateStore
from policies.state.redis_keys import StateKeys
from policies.state.redis_store import RedisStore
from tests.policies.state.conftest import OpenStore

T0 = 1_700_000_000.25


async def test_calls_read_back_oldest_first_with_their_figures(store: StateStore) -> None:
    await store.record_call("a/x", T0, True, 0.125, None)
    await store.record_call("a/x", T0 + 1, False, None)
    await store.record_call("a/x", T0 + 2, True, 0.5, 0.25)  # a stream: its first token
    await store.record_call("b/y", T0 + 3, True, None)  # a health check: no latency
    got = await store.recent_calls(["a/x", "b/y", "c/z"], T0 - 1)
    assert list(got["a/x"]) == [
        CallSample(T0, True, 0.125, None),
        CallSample(T0 + 1, False, None, None),
        CallSample(T0 + 2, True, 0.5, 0.25),
    ]
    assert list(got["b/y"]) == [CallSample(T0 + 3, True, None, None)]
    assert list(got["c/z"]) == []


async def test_only_calls_after_since(store: StateStore) -> None:
    for i in range(5):
        await store.record_call("a/x", T0 + i, True, 0.1)
    got = await store.recent_calls(["a/x"], T0 + 2)
    assert [s.at for s in got["a/x"]] == [T0 + 3, T0 + 4]


async def test_capped_per_deployment_newest_kept(store: StateStore) -> None:
    for i in range(RECENT_CALLS_CAP + 40):
        await store.record_call("a/x", T0 + i, i % 2 == 0, i / 1000)
    got = list((await store.recent_calls(["a/x"], 0.0))["a/x"])
    assert len(got) == RECENT_CALLS_CAP
    assert got[0].at == T0 + 40
    assert got[-1].at == T0 + RECENT_CALLS_CAP + 39


async def test_replicas_read_each_others_calls(open_store: OpenStore) -> None:
    one, other = open_store(), open_store()
    await one.record_call("a/x", T0, True, 0.2)
    await other.record_call("a/x", T0 + 1, False, None)
    for store in (one, other):
        got = await store.recent_calls(["a/x"], 0.0)
        assert [(s.at, s.ok) for s in got["a/x"]] == [(T0, True), (T0 + 1, False)]


def test_the_list_shares_its_deployments_breaker_slot() -> None:
    keys = StateKeys("turnout:")
    for deployment in ("a/x", "openai/gpt-4o", "local/qwen:7b"):
        slot = key_slot(keys.recent_calls(deployment).encode())
        assert slot == key_slot(keys.breaker(deployment).encode())
        assert slot == key_slot(keys.breaker_window(deployment).encode())
    assert key_slot(keys.recent_calls("a/x").encode()) != key_slot(b"turnout:a/x:calls")


async def test_redis_list_is_capped_and_expires(store: StateStore) -> None:
    if not isinstance(store, RedisStore):
        pytest.skip("Redis only: the list itself")
    for i in range(RECENT_CALLS_CAP + 5):
        await store.record_call("a/x", T0 + i, True, 0.01)
    name = store._keys.recent_calls("a/x")
    assert await store._redis.llen(name) == RECENT_CALLS_CAP
    assert await store._redis.pttl(name) > 0
