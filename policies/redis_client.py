"""How Turnout talks to Redis, for the shared-state store and the files-and-batches store
alike: where Redis is (`RedisAddress`: one node, or a cluster's startup nodes), the client
(`connect`: redis-py's `Redis` or `RedisCluster`), which keys one script may touch together
(`slot_groups`), and the one place redis-py's outage errors become Turnout's (`reachable`:
`StateUnavailable`, `StorageUnavailable`).

An outage is no connection (authentication, a server still loading and no free pooled
connection included), no answer in time, a read-only replica, a server out of memory or
whose master is down, and on a cluster: the cluster down or a slot not served (a failover
under way), TRYAGAIN or redirections past redis-py's limit, no node reachable. Anything
else (a script error, a bad reply, keys of one command in two slots) is a bug and stays
what it is.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from redis import exceptions
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from policies.policy_config import StateSettings
from providers.shown_url import shown_url

OUTAGE = (
    exceptions.ConnectionError,
    exceptions.TimeoutError,
    exceptions.ReadOnlyError,
    exceptions.OutOfMemoryError,
    # ClusterDownError and MasterDownError (a failover under way), and "TTL exhausted":
    # MOVED, ASK or TRYAGAIN answered more times than redis-py follows them.
    exceptions.ClusterError,
    exceptions.TryAgainError,
    exceptions.SlotNotCoveredError,
    exceptions.RedisClusterUnreachableError,
)

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}

RedisClient = Redis | RedisCluster


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """Where the shared Redis is: `url` (one node, or any node of a cluster) or `nodes`
    (a cluster's startup nodes, each `host:port` or a URL), and whether it is a cluster."""

    url: str | None = None
    nodes: tuple[str, ...] = ()
    cluster: bool = False

    @classmethod
    def of(cls, settings: StateSettings) -> RedisAddress | None:
        """The configured Redis; None when the state is in memory."""
        if settings.redis_cluster_nodes:
            return cls(nodes=tuple(settings.redis_cluster_nodes), cluster=True)
        if settings.redis_url is None:
            return None
        cluster = settings.cluster or urlsplit(settings.redis_url).scheme in CLUSTER_SCHEMES
        return cls(url=settings.redis_url, cluster=cluster)

    def urls(self) -> list[str]:
        """Every address as a plain `redis://` or `rediss://` URL."""
        found = [self.url] if self.url is not None else [_as_url(n) for n in self.nodes]
        return [_plain_scheme(url) for url in found]

    def display(self) -> str:
        """Fit for logs and health answers: no user, password or query (which may hold
        either); `redis-cluster:` before a cluster's nodes."""
        shown = ",".join(shown_url(url) for url in self.urls())
        return f"redis-cluster:{shown}" if self.cluster else shown


def connect(address: RedisAddress | str, timeout_s: float) -> RedisClient:
    """A client for `address` (a plain URL: one node); no connection is made until the
    first call.

    A command is tried again once, at once, only when its connection broke (a pooled
    connection Redis closed, e.g. by restarting); never after a timeout. redis-py's
    default (10 tries with backoff) would hold a request for seconds during an outage.
    A cluster client follows MOVED and ASK itself (so it finds a slot's new master after
    a failover) and its one retry (after a broken connection, a timeout, or the cluster
    down) goes where a fresh map of the cluster says; it never waits for a failover to
    finish: the caller fails open meanwhile. Each node's own connections never retry.
    """
    if isinstance(address, str):
        address = RedisAddress(url=address)
    retry = Retry(NoBackoff(), 1, supported_errors=(exceptions.ConnectionError,))
    urls = address.urls()
    if not address.cluster:
        return Redis.from_url(
            urls[0], retry=retry, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
    first = urlsplit(urls[0])
    startup = [ClusterNode(_host(url), _port(url)) for url in urls]
    return RedisCluster(
        startup_nodes=startup,
        username=first.username,
        password=first.password,
        ssl=first.scheme == "rediss",
        retry=retry,
        # A slot whose master is failing over must not stop the slots still served.
        require_full_coverage=False,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
    )


def slot_groups(client: RedisClient, keys: Sequence[str]) -> list[list[int]]:
    """`keys`' indexes grouped by hash slot, in order of first appearance: what one
    script may touch together. One node: one group, whatever the keys."""
    if not isinstance(client, RedisCluster):
        return [list(range(len(keys)))]
    groups: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(client.keyslot(key), []).append(i)
    return list(groups.values())


@contextmanager
def reachable(outage: type[Exception]) -> Iterator[None]:
    """Raise `outage` (with the redis error's words) for an outage inside the block."""
    try:
        yield
    except OUTAGE as exc:
        raise outage(f"redis: {exc or type(exc).__name__}") from exc
    except exceptions.RedisClusterException as exc:
        # A cluster client that no startup node let in (a wrong password: redis-py's
        # AuthenticationError, an outage on one node), or whose nodes disagree on the slot
        # map mid-failover, says so in a plain RedisClusterException: an outage. Keys in
        # two slots are a bug in Turnout's scripts and stay one.
        if not isinstance(exc.__cause__, OUTAGE) and _CROSS_SLOT in str(exc).lower():
            raise
        raise outage(f"redis: {exc}") from exc


_CROSS_SLOT = "must map to the same"  # redis-py: "… all keys must map to the same key slot"


def _as_url(node: str) -> str:
    return node if "://" in node else f"redis://{node}"


def _plain_scheme(url: str) -> str:
    parts = urlsplit(url)
    scheme = CLUSTER_SCHEMES.get(parts.scheme, parts.scheme)
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


def _host(url: str) -> str:
    return urlsplit(url).hostname or "localhost"


def _port(url: str) -> int:
    return urlsplit(url).port or 6379
