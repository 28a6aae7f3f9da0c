"""Review of the Redis Cluster work (issue 13): outages a cluster client raises that must
read as outages, never as bugs (a 500)."""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from urllib.parse import urlsplit

import pytest

from policies.redis_client import RedisAddress
from policies.state.base import Limit, LimitKind, StateUnavailable
from policies.state.redis_store import RedisStore
from tests.redis_cluster import redis_cluster as redis_cluster
from tests.redis_cluster import redis_cluster_url as redis_cluster_url


async def test_a_wrong_password_is_an_outage(redis_cluster_url: str) -> None:
    """As on one node (redis-py's AuthenticationError is a ConnectionError): a rotated
    password fails open, it is not a bug. The cluster client wraps it, when no startup
    node lets it in, in a plain RedisClusterException."""
    parts = urlsplit(redis_cluster_url)
    url = f"redis+cluster://nobody:wr0ng-s3cret@{parts.hostname}:{parts.port}"
    store = RedisStore.from_url(RedisAddress(url=url, cluster=True), prefix="t:")
    limit = Limit("rpm:key:a", LimitKind.RATE, 5, 60.0)
    try:
        with pytest.raises(StateUnavailable) as caught:
            await store.admit([limit], [1], time.time())
        assert "wr0ng-s3cret" not in str(caught.value)
    finally:
        await store.aclose()


async def test_cancelled_and_concurrent_cross_slot_admissions_never_over_admit(
    redis_cluster_url: str,
) -> None:
    """Keys' limits and their team's are in different slots (one script each, refunds on a
    later refusal); requests cancelled at any point of that sequence (a client gone) may
    leave a reservation behind, never an admission over a capacity."""
    prefix = f"t:{uuid.uuid4().hex}:"
    stores = [
        RedisStore.from_url(RedisAddress(url=redis_cluster_url, cluster=True), prefix=prefix)
        for _ in range(3)
    ]
    team = Limit("rpm:team:review", LimitKind.RATE, 6, 3600.0)
    keys = [Limit(f"rpm:key:k{i}", LimitKind.RATE, 4, 3600.0) for i in range(3)]
    admitted: list[str] = []
    now = time.time()

    async def one(n: int) -> None:
        key = keys[n % 3]
        store = stores[n % len(stores)]
        admission = await store.admit([key, team], [1, 1], now)
        if admission.allowed:
            admitted.append(key.key)

    try:
        tasks = [asyncio.create_task(one(n)) for n in range(60)]
        for n, task in enumerate(tasks):
            if n % 4 == 0:
                asyncio.get_running_loop().call_later(random.uniform(0, 0.01), task.cancel)
        await asyncio.gather(*tasks, return_exceptions=True)
        assert len(admitted) <= team.capacity
        assert all(admitted.count(k.key) <= k.capacity for k in keys)
        states = await stores[0].peek([team, *keys], now)
        assert states[0].remaining <= team.capacity - len(admitted)
    finally:
        for store in stores:
            await store.aclose()


def test_cluster_errors_that_are_outages_and_the_one_that_is_a_bug() -> None:
    """Nodes that disagree on the slot map mid-failover raise a plain
    RedisClusterException with no cause: an outage (fail open). Keys of one script in two
    slots are Turnout's bug and must stay loud."""
    from redis.exceptions import RedisClusterException

    from policies.redis_client import reachable

    with pytest.raises(StateUnavailable), reachable(StateUnavailable):
        raise RedisClusterException(
            "Redis Cluster cannot be connected. startup_nodes could not agree"
        )
    with pytest.raises(RedisClusterException), reachable(StateUnavailable):
        raise RedisClusterException("EVALSHA - all keys must map to the same key slot")
