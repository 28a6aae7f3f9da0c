"""What keeping a finished call for the status page (`StateStore.record_call`) costs in
Redis and Redis Cluster on loopback, beside the per-call write it joins off the request's
path (`observe_latency`, the latency EWMA): µs per awaited call, interleaved rounds, best
round reported (the machine is shared). Neither is on the request's path (policies/
deferred.py runs them as background tasks); this is the store's extra work per request.

    python bench/record_call_bench.py [--calls 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policies.redis_client import RedisAddress  # noqa: E402
from policies.state.redis_store import RedisStore  # noqa: E402
from tests.redis_cluster import RedisCluster  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402


async def per_call_us(store: RedisStore, what: str, calls: int) -> float:
    now = time.time()
    started = time.perf_counter()
    for i in range(calls):
        if what == "record_call":
            await store.record_call("a/x", now + i * 1e-3, True, 0.1234, 0.0456)
        else:
            await store.observe_latency("a/x", 0.1234, 0.3)
    return (time.perf_counter() - started) / calls * 1e6


async def run(calls: int, rounds: int, redis_url: str, cluster_url: str) -> None:
    prefix = f"bench:{uuid.uuid4().hex}:"
    stores = {
        "redis": RedisStore.from_url(RedisAddress(url=redis_url), prefix=prefix),
        "cluster": RedisStore.from_url(RedisAddress(url=cluster_url, cluster=True), prefix=prefix),
    }
    times: dict[tuple[str, str], list[float]] = {}
    for _ in range(rounds):
        for name, store in stores.items():
            for what in ("observe_latency", "record_call"):
                times.setdefault((name, what), []).append(await per_call_us(store, what, calls))
    for store in stores.values():
        await store.aclose()
    print("µs per awaited call (best of rounds)")
    for (name, what), values in times.items():
        print(f"  {name:8s} {what:16s} {min(values):8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with RedisServer() as redis, RedisCluster() as cluster:
        asyncio.run(run(args.calls, args.rounds, redis.url, cluster.url))


if __name__ == "__main__":
    main()
