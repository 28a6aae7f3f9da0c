"""The policy layer's own cost per request, in process (no HTTP, no upstream): everything
Turnout decides around a call — key lookup, rules, limits admitted and settled, strategy
order, breaker acquire and record, in-flight counts — with the memory store and with a
real Redis on loopback, against a baseline of the same steps for an open config with
nothing to enforce; and with a real three-master Redis Cluster on loopback (issue 13),
where a request's key and team limits sit in two slots and are admitted one slot after the
other. Interleaved rounds; best round reported (the machine is shared).

    python bench/policy_bench.py [--requests 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policies.config import TurnoutConfig  # noqa: E402
from router.gateway import Gateway  # noqa: E402
from tests.redis_cluster import RedisCluster  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

BODY: dict[str, Any] = {
    "model": "m",
    "messages": [{"role": "user", "content": "Write one short sentence about load balancing."}],
    "max_tokens": 64,
}
PROVIDERS = {
    "a": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
    "b": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
}


def config(policy: bool, redis_url: str | None, cluster: bool = False) -> TurnoutConfig:
    if not policy:
        return TurnoutConfig.model_validate(
            {
                "providers": PROVIDERS,
                "models": {"m": {"deployments": [{"provider": "a", "model": "x"}]}},
            }
        )
    return TurnoutConfig.model_validate(
        {
            "providers": PROVIDERS,
            "models": {
                "m": {
                    "strategy": "least-latency",
                    "deployments": [
                        {"provider": "a", "model": "x"},
                        {"provider": "b", "model": "x"},
                    ],
                }
            },
            "teams": {
                "t": {
                    "keys": ["sk-t"],
                    "models": ["m"],
                    "limits": {"rpm": 10**9, "tpm": 10**12},
                    "key_limits": {"rpm": 10**9},
                    "rules": [
                        {"when": {"metadata": {"tier": "batch"}}, "use": {"strategy": "cost"}}
                    ],
                }
            },
            "state": {"redis_url": redis_url, "cluster": cluster},
            "storage": {"single_replica": True},
        }
    )


async def per_request_us(gateway: Gateway, key: str | None, count: int) -> float:
    """Mean microseconds for the policy steps of one request."""
    caller = gateway.keys.lookup(key) if key else None
    from policies.teams import ANONYMOUS

    caller = caller or ANONYMOUS
    orderer = gateway.dispatcher.orderer
    assert orderer is not None
    started = time.perf_counter()
    for _ in range(count):
        route = gateway.router.route(caller, BODY, {}, None)
        reservation = await gateway.limiter.admit(caller, BODY, lambda scope, kind: None)
        target = (await orderer.order(route.plan.targets, route.plan.strategy))[0]
        await gateway.health.acquire(target)
        await gateway.health.started(target)
        await gateway.health.succeeded(target, 0.001)
        await gateway.health.ended(target)
        await gateway.limiter.settle(reservation, 80)
    return (time.perf_counter() - started) / count * 1e6


async def run(
    requests: int, rounds: int, redis_url: str, cluster_url: str
) -> dict[str, list[float]]:
    variants = {
        "open (baseline)": (Gateway.from_config(config(False, None)), None),
        "team+limits, memory": (Gateway.from_config(config(True, None)), "sk-t"),
        "team+limits, redis": (Gateway.from_config(config(True, redis_url)), "sk-t"),
        "team+limits, cluster": (Gateway.from_config(config(True, cluster_url, True)), "sk-t"),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, (gateway, key) in variants.items():
            shared = "redis" in name or "cluster" in name
            n = requests if not shared else max(200, requests // 10)
            times[name].append(await per_request_us(gateway, key, n))
    for gateway, _ in variants.values():
        await gateway.aclose()
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with RedisServer() as redis, RedisCluster() as cluster:
        times = asyncio.run(run(args.requests, args.rounds, redis.url, cluster.url))
    base = min(times["open (baseline)"])
    print("policy steps per request (µs; best and median of rounds; ratio = best / baseline best)")
    for name, values in times.items():
        best = min(values)
        median = statistics.median(values)
        print(f"  {name:22s} best {best:8.1f}  median {median:8.1f}  x{best / base:5.2f}")


if __name__ == "__main__":
    main()
