"""How Turnout talks to Redis, for the shared-state store and the files-and-batches store
alike: the client (`connect`) and the one place redis-py's outage errors become
Turnout's (`reachable`: `StateUnavailable`, `StorageUnavailable`).

An outage is no connection (authentication, a server still loading and no free pooled
connection included), no answer in time, a read-only replica, a server out of memory or
whose master is down; anything else (a script error, a bad reply) is a bug and stays what
it is."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis import exceptions
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

OUTAGE = (
    exceptions.ConnectionError,
    exceptions.TimeoutError,
    exceptions.ReadOnlyError,
    exceptions.OutOfMemoryError,
    exceptions.MasterDownError,
)


def connect(url: str, timeout_s: float) -> Redis:
    """E.g. `redis://localhost:6379/0`; no connection is made until the first call.

    A command is tried again once, at once, only when its connection broke (a pooled
    connection Redis closed, e.g. by restarting); never after a timeout. redis-py's
    default (10 tries with backoff) would hold a request for seconds during an outage.
    """
    return Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 1, supported_errors=(exceptions.ConnectionError,)),
    )


@contextmanager
def reachable(outage: type[Exception]) -> Iterator[None]:
    """Raise `outage` (with the redis error's words) for an outage inside the block."""
    try:
        yield
    except OUTAGE as exc:
        raise outage(f"redis: {exc or type(exc).__name__}") from exc
