"""Cache-aware routing (issue 19): `affinity` against `least-busy` and `weighted` over
pools of replicas that model a serving engine (tests/fakes/replica_pool.py: an LRU prefix
cache of 64-char blocks, prefill per uncached token, decode per token, 4 requests at once
per replica and a queue).

One Turnout process serves three models, one per strategy, each over a pool of 4 replicas
of its own (12 replica processes' worth of servers in 3 subprocesses), so no strategy's
requests warm another's caches. The workload is multi-tenant: 16 tenants, each with its own
~8,000-character system prompt; conversations of 4 turns (each turn appends the answer and
a new user message; the client sends `user` = the conversation's id), a think time between
turns, `--concurrency` conversations in flight. Each replica caches about a quarter of the
tenants' prompts (`--capacity-blocks`), so the working set fits the pool but not one
replica. Phases alternate between the strategies (`--rounds` rounds, the order shuffled in
each); the first round warms the caches and is left out of the figures.

Reported per strategy: cache hit rate (cached / prompt tokens, from the replicas' own
usage), time to first token p50/p95 (streams, client side), throughput (requests/s over
the phases' wall time) and the busiest replica's share of requests (and that share against
the mean). Then the same with one tenant's prompt in 80 % of conversations (`skewed`).

    .venv/bin/python bench/affinity_bench.py [--rounds 3] [--conversations 32]
        [--concurrency 24] [--prefill-ms 0.1] [--decode-ms 4]

Only 127.0.0.1 is contacted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.served import served_turnout  # noqa: E402

STRATEGIES = ("affinity", "least-busy", "weighted")
TENANTS = 16
PROMPT_CHARS = 8000
TURNS = 4
WORDS = ["vessel", "harbour", "tide", "chart", "bearing", "knot"]
WORDS += ["anchor", "reef", "current", "beacon", "sextant"]


def system_prompt(tenant: int) -> str:
    rng = random.Random(tenant)
    words = []
    size = 0
    while size < PROMPT_CHARS:
        word = rng.choice(WORDS)
        words.append(word)
        size += len(word) + 1
    return f"Tenant {tenant} policy. " + " ".join(words)


@contextlib.contextmanager
def replica_pool(args: argparse.Namespace) -> Iterator[list[str]]:
    """4 replicas in a process of their own; their base URLs."""
    command = [
        sys.executable, "-m", "tests.fakes.replica_pool", "--replicas", "4",
        "--capacity-blocks", str(args.capacity_blocks), "--max-running", "4",
        "--prefill-ms-per-token", str(args.prefill_ms), "--decode-ms-per-token",
        str(args.decode_ms), "--output-tokens", str(args.output_tokens),
    ]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        yield [process.stdout.readline().strip() for _ in range(4)]
    finally:
        process.terminate()
        process.wait(timeout=10)


def turnout_config(pools: dict[str, list[str]], max_load: float | None) -> dict[str, Any]:
    providers: dict[str, Any] = {}
    models: dict[str, Any] = {}
    for strategy, urls in pools.items():
        deployments = []
        for i, url in enumerate(urls):
            name = f"{strategy}-{i}"
            providers[name] = {
                "kind": "openai",
                "base_url": url,
                "load_metrics": {"url": url.removesuffix("/v1") + "/metrics", "interval": 0.5},
            }
            deployments.append({"provider": name, "model": strategy})
        models[strategy] = {"deployments": deployments, "strategy": strategy}
    if max_load is not None:
        models["affinity"]["affinity"] = {"max_load": max_load}
    return {
        "providers": providers,
        "models": models,
        "timeouts": {"connect": 5, "first_byte": 60, "stream_idle": 60, "total": 120},
        "retry": {"attempts": 1},
    }


@dataclass
class Results:
    ttft: list[float] = field(default_factory=list)
    prompt: int = 0
    cached: int = 0
    requests: int = 0
    seconds: float = 0.0
    replicas: Counter[str] = field(default_factory=Counter)
    errors: int = 0
    per_replica: list[str] = field(default_factory=list)  # each replica's own hit rate


async def turn(session: aiohttp.ClientSession, url: str, body: dict[str, Any], out: Results) -> str:
    started = time.perf_counter()
    first: float | None = None
    text = []
    async with session.post(url, json=body) as response:
        if response.status != 200:
            out.errors += 1
            await response.read()
            return ""
        out.replicas[response.headers.get("x-turnout-deployment", "?")] += 1
        async for line in response.content:
            if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
                continue
            chunk = orjson.loads(line[6:])
            for choice in chunk.get("choices") or ():
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    first = first or time.perf_counter()
                    text.append(piece)
            usage = chunk.get("usage")
            if usage:
                out.prompt += usage["prompt_tokens"]
                out.cached += (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
    if first is not None:
        out.ttft.append(first - started)
    out.requests += 1
    return "".join(text)


async def conversation(
    session: aiohttp.ClientSession, url: str, model: str, tenant: int, cid: str, out: Results
) -> None:
    rng = random.Random(cid)
    messages: list[dict[str, str]] = [{"role": "system", "content": system_prompt(tenant)}]
    for t in range(TURNS):
        question = f"Turn {t} of {cid}: " + " ".join(rng.choices(WORDS, k=30))
        messages.append({"role": "user", "content": question})
        body = {
            "model": model,
            "messages": messages,
            "stream": True,
            "stream_options": {"include_usage": True},
            "user": cid,
        }
        answer = await turn(session, url, body, out)
        messages.append({"role": "assistant", "content": answer})
        await asyncio.sleep(rng.uniform(0.05, 0.3))  # the user reads, then types


async def phase(
    base: str, model: str, tenants: list[int], concurrency: int, tag: str, out: Results
) -> None:
    url = f"{base}/v1/chat/completions"
    queue = list(enumerate(tenants))
    started = time.perf_counter()
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=300)
    ) as session:

        async def worker() -> None:
            while queue:
                i, tenant = queue.pop()
                await conversation(session, url, model, tenant, f"{tag}-{model}-{i}", out)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    out.seconds += time.perf_counter() - started


def tenants_for(rng: random.Random, count: int, skewed: bool) -> list[int]:
    if skewed:
        return [0 if rng.random() < 0.8 else rng.randrange(1, TENANTS) for _ in range(count)]
    return [rng.randrange(TENANTS) for _ in range(count)]


async def run(args: argparse.Namespace, skewed: bool) -> dict[str, Results]:
    results = {s: Results() for s in STRATEGIES}
    rng = random.Random(7 if skewed else 3)
    with contextlib.ExitStack() as stack:
        pools = {s: stack.enter_context(replica_pool(args)) for s in STRATEGIES}
        config_dir = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        turnout = stack.enter_context(
            served_turnout(config_dir / "turnout.yaml", turnout_config(pools, args.max_load))
        )
        for r in range(args.rounds):
            order = list(STRATEGIES)
            rng.shuffle(order)
            for strategy in order:
                tenants = tenants_for(rng, args.conversations, skewed)
                out = results[strategy] if r > 0 else Results()  # round 0 warms up
                await phase(turnout.url, strategy, tenants, args.concurrency, f"r{r}", out)
        for strategy, urls in pools.items():
            results[strategy].per_replica = await replica_hit_rates(urls)
    return results


async def replica_hit_rates(urls: list[str]) -> list[str]:
    """Each replica's cached / prompt tokens over the whole run (warm-up included)."""
    rates = []
    async with aiohttp.ClientSession() as session:
        for url in urls:
            async with session.get(url.removesuffix("/v1") + "/stats") as response:
                stats = await response.json()
            share = stats["cached_tokens"] / max(stats["prompt_tokens"], 1)
            rates.append(f"{share:.0%} of {stats['served']}")
    return rates


def report(title: str, results: dict[str, Results]) -> None:
    print(f"\n{title}")
    print(
        f"{'strategy':<11} {'hit rate':>8} {'TTFT p50':>9} {'TTFT p95':>9} "
        f"{'req/s':>7} {'busiest':>8} {'x mean':>7} {'errors':>6}"
    )
    for strategy, out in results.items():
        ttft = sorted(out.ttft)
        p50 = statistics.median(ttft) if ttft else float("nan")
        p95 = ttft[int(0.95 * (len(ttft) - 1))] if ttft else float("nan")
        total = sum(out.replicas.values())
        busiest = max(out.replicas.values()) / total if total else float("nan")
        print(
            f"{strategy:<11} {out.cached / max(out.prompt, 1):>8.1%} {p50 * 1000:>7.0f}ms "
            f"{p95 * 1000:>7.0f}ms {out.requests / max(out.seconds, 1e-9):>7.1f} "
            f"{busiest:>8.1%} {busiest * 4:>7.2f} {out.errors:>6}"
        )
    for strategy, out in results.items():
        print(
            f"  {strategy}: per replica (hit rate of requests served) {', '.join(out.per_replica)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--conversations", type=int, default=32, help="per phase")
    parser.add_argument("--concurrency", type=int, default=24)
    parser.add_argument("--capacity-blocks", type=int, default=640)
    parser.add_argument("--prefill-ms", type=float, default=0.1, help="per uncached token")
    parser.add_argument("--decode-ms", type=float, default=4.0, help="per generated token")
    parser.add_argument("--output-tokens", type=int, default=16)
    parser.add_argument("--max-load", type=float, default=None, help="affinity's (default 1.25)")
    parser.add_argument("--only", choices=("uniform", "skewed"), default=None)
    args = parser.parse_args()
    for name, skewed in (("uniform", False), ("skewed", True)):
        if args.only in (None, name):
            started = time.perf_counter()
            results = asyncio.run(run(args, skewed))
            report(f"{name} ({time.perf_counter() - started:.0f} s)", results)


if __name__ == "__main__":
    main()
