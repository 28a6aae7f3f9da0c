"""Choosing the `StateStore` from configuration: Redis when a URL is given, memory otherwise."""

from __future__ import annotations

from policies.state.base import StateStore
from policies.state.memory import MemoryStore
from policies.state.redis_store import RedisStore


def build_store(redis_url: str | None, *, prefix: str = "turnout:") -> StateStore:
    """One process needs nothing shared, so memory is the default; replicas that must agree
    on limits and breakers point at the same Redis. The Redis store connects lazily: call
    `ping` at start-up to fail fast on a wrong URL."""
    if redis_url is None:
        return MemoryStore()
    return RedisStore.from_url(redis_url, prefix=prefix)
