"""Choosing the `StateStore` from configuration: Redis when a URL is given, memory otherwise."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from policies.policy_config import StateSettings
from policies.state.base import StateStore
from policies.state.fail_open import FailOpenStore, OnError
from policies.state.memory import MemoryStore
from policies.state.redis_store import RedisStore


def build_store(settings: StateSettings, on_error: OnError | None = None) -> StateStore:
    """One process needs nothing shared, so memory is the default; replicas that must agree
    on limits and breakers point at the same Redis, behind `FailOpenStore` so an outage
    does not stop routing (`on_error` counts each operation it failed). The Redis store
    connects lazily: call `ping` at start-up to fail fast on a wrong URL."""
    if settings.redis_url is None:
        return MemoryStore()
    redis = RedisStore.from_url(
        settings.redis_url, prefix=settings.prefix, timeout_s=settings.timeout
    )
    return FailOpenStore(redis, on_error)


def display_url(url: str | None) -> str:
    """The store's URL fit for logs and health answers: any user or password removed."""
    if url is None:
        return "memory"
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))
