"""Choosing the `StateStore` from configuration: Redis (one node or a cluster) when one is
configured, memory otherwise."""

from __future__ import annotations

from policies.policy_config import StateSettings
from policies.redis_client import RedisAddress
from policies.state.base import StateStore
from policies.state.fail_open import FailOpenStore, OnError
from policies.state.memory import MemoryStore
from policies.state.redis_store import RedisStore


def build_store(settings: StateSettings, on_error: OnError | None = None) -> StateStore:
    """One process needs nothing shared, so memory is the default; replicas that must agree
    on limits and breakers point at the same Redis (or Redis Cluster), behind
    `FailOpenStore` so an outage does not stop routing (`on_error` counts each operation it
    failed). The Redis store connects lazily: call `ping` at start-up to fail fast on a
    wrong URL."""
    address = RedisAddress.of(settings)
    if address is None:
        return MemoryStore()
    redis = RedisStore.from_url(address, prefix=settings.prefix, timeout_s=settings.timeout)
    return FailOpenStore(redis, on_error)


def display_url(settings: StateSettings) -> str:
    """Where the store is, fit for logs and health answers: any user, password or query
    removed (every node's, for a cluster); `memory` when there is no Redis."""
    address = RedisAddress.of(settings)
    return "memory" if address is None else address.display()
