"""Every store test runs against three stores: `MemoryStore`; `RedisStore` on a real
redis-server started once for the session (`tests/redis_server.py`); and `RedisStore` on a
real three-master Redis Cluster (`tests/redis_cluster.py`), where a test's keys spread over
the masters as production's do (a limit's slot is its owner's), so admissions that span
owners run one script per slot."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from policies.redis_client import RedisAddress
from policies.state.base import StateStore
from policies.state.memory import MemoryStore
from policies.state.redis_store import RedisStore
from tests.redis_cluster import redis_cluster as redis_cluster
from tests.redis_cluster import redis_cluster_url as redis_cluster_url
from tests.redis_server import redis_url as redis_url

OpenStore = Callable[[], StateStore]


@pytest.fixture(params=["memory", "redis", "cluster"])
async def open_store(request: pytest.FixtureRequest) -> AsyncIterator[OpenStore]:
    """Opens stores that share one state, as replicas do. Redis: each call is a new client
    with its own connections on the same namespace (unique per test, so tests sharing the
    server never see each other's keys). Memory: the one store, as a process has one."""
    if request.param == "memory":
        shared = MemoryStore()
        yield lambda: shared
        return
    if request.param == "cluster":
        url: str = request.getfixturevalue("redis_cluster_url")
        address = RedisAddress(url=url, cluster=True)
    else:
        address = RedisAddress(url=request.getfixturevalue("redis_url"))
    prefix = f"test:{uuid.uuid4().hex}:"
    opened: list[RedisStore] = []

    def open_redis() -> StateStore:
        opened.append(RedisStore.from_url(address, prefix=prefix))
        return opened[-1]

    yield open_redis
    for store in opened:
        await store.aclose()


@pytest.fixture
def store(open_store: OpenStore) -> StateStore:
    return open_store()
