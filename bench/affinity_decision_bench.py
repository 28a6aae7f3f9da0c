"""What `strategy: affinity` costs per request, in process (issue 19): building the
request's key (session, the prompt cut into chained blocks, the rendezvous anchor) and the
decision with its recording (pin lookup, in-flight counts, longest match per deployment,
bounded load, the chosen deployment's record updated), at 4 deployments whose records
hold `max_blocks` (10,000) blocks each, with the memory store; `least-busy`'s order beside
it for scale. Interleaved rounds; best round reported (the machine is shared).

    python bench/affinity_decision_bench.py [--requests 5000] [--rounds 5] [--chars 8000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from policies.affinity.key import affinity_key  # noqa: E402
from policies.affinity.settings import AffinitySettings  # noqa: E402
from policies.config import Deployment  # noqa: E402
from policies.plan import Target  # noqa: E402
from policies.policy_config import Strategy  # noqa: E402
from policies.state.memory import MemoryStore  # noqa: E402
from policies.strategies import Orderer  # noqa: E402

POOL = [Target("m", Deployment(provider=f"r{i}", model="m")) for i in range(4)]
SETTINGS = AffinitySettings()


def workload(requests: int, chars: int, seed: int) -> list[dict[str, Any]]:
    """16 tenants' system prompts (`chars` long) and many conversations under them."""
    rng = random.Random(seed)
    systems = [f"Tenant {t} instructions: " + "policy text " * (chars // 12) for t in range(16)]
    bodies = []
    for i in range(requests):
        messages = [{"role": "system", "content": rng.choice(systems)[:chars]}]
        for turn in range(rng.randrange(1, 6)):
            messages.append({"role": "user", "content": f"conversation {i % 400} turn {turn} " * 8})
        bodies.append({"model": "m", "messages": messages, "user": f"u{i % 400}"})
    return bodies


async def warmed(chars: int) -> Orderer:
    """An orderer whose four records are full (10,000 blocks each)."""
    # As the gateway builds it: remote deployments have no prefix-cache hook (None).
    order = Orderer(MemoryStore(), random.Random(1), lambda _: None, None, None, lambda _: None)
    filler = workload(4000, chars, seed=2)
    for body in filler:
        await order.order(POOL, Strategy.AFFINITY, affinity_key(SETTINGS, body, {}, "t"))
    return order


async def one_round(order: Orderer, bodies: list[dict[str, Any]]) -> dict[str, float]:
    n = len(bodies)
    start = time.perf_counter()
    keys = [affinity_key(SETTINGS, body, {}, "t") for body in bodies]
    keyed = time.perf_counter()
    for key in keys:
        await order.order(POOL, Strategy.AFFINITY, key)
    decided = time.perf_counter()
    for _ in range(n):
        await order.order(POOL, Strategy.LEAST_BUSY)
    busy = time.perf_counter()
    return {
        "key_us": (keyed - start) / n * 1e6,
        "decision_us": (decided - keyed) / n * 1e6,
        "least_busy_us": (busy - decided) / n * 1e6,
    }


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chars", type=int, default=8000)
    args = parser.parse_args()
    order = await warmed(args.chars)
    records = [len(r) for r in order._affinity._records.values()]
    print(f"records (blocks per deployment): {records}")
    results = []
    for r in range(args.rounds):
        results.append(await one_round(order, workload(args.requests, args.chars, seed=10 + r)))
    blocks = len(affinity_key(SETTINGS, workload(1, args.chars, 3)[0], {}, "t").blocks)
    print(f"~{blocks} blocks per prompt; best of {args.rounds} rounds, µs per request:")
    for name in ("key_us", "decision_us", "least_busy_us"):
        figures = sorted(r[name] for r in results)
        print(f"  {name:14} best {figures[0]:7.1f}   median {figures[len(figures) // 2]:7.1f}")


if __name__ == "__main__":
    asyncio.run(main())
