"""Review of the Redis Cluster work (issue 13): outages a cluster client raises that must
read as outages, never as bugs (a 500)."""

from __future__ import annotations

import time
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
