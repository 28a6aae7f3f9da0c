"""The response cache in both stores: bytes in, bytes out, gone after its TTL."""

from __future__ import annotations

import asyncio

from policies.state.base import StateStore
from tests.policies.state.conftest import OpenStore

BODY = b'{"id": "chatcmpl-1"}\x00\xff'  # not UTF-8: the cache must not decode


async def test_set_then_get_from_another_replica(open_store: OpenStore) -> None:
    store, replica = open_store(), open_store()
    assert await store.cache_get("k") is None

    await store.cache_set("k", BODY, ttl_s=60)

    assert await replica.cache_get("k") == BODY
    await replica.cache_set("k", b"newer", ttl_s=60)
    assert await store.cache_get("k") == b"newer"


async def test_entries_expire_after_their_ttl(store: StateStore) -> None:
    await store.cache_set("short", BODY, ttl_s=0.05)
    await store.cache_set("long", BODY, ttl_s=60)
    assert await store.cache_get("short") == BODY

    await asyncio.sleep(0.08)

    assert await store.cache_get("short") is None
    assert await store.cache_get("long") == BODY


async def test_a_ttl_of_zero_stores_nothing(store: StateStore) -> None:
    await store.cache_set("k", BODY, ttl_s=60)
    await store.cache_set("k", BODY, ttl_s=0)
    assert await store.cache_get("k") is None
