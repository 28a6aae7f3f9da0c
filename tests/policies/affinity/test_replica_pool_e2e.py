"""`affinity` over the replica pool (tests/fakes/replica_pool.py): replicas that keep an
LRU prefix cache with a fixed capacity and report their cache hits. A working set that fits
the pool but not one replica is served from cache far more often with `affinity` than with
a cache-blind strategy, and the hits reach the client as `cached_tokens`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from tests.fakes.replica_pool import ReplicaPool, ReplicaSettings
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
ADMIN_KEY = "sk-admin"
TENANTS = 8
TURNS = 4


def pool_config(pool: ReplicaPool, strategy: str) -> dict[str, Any]:
    names = [f"r{i}" for i in range(len(pool.base_urls))]
    models = {
        "m": {"deployments": [{"provider": n, "model": "m"} for n in names], "strategy": strategy}
    }
    upstreams = dict(zip(names, pool.base_urls, strict=True))
    return simple_config(upstreams, models, keys=[{"key": ADMIN_KEY, "admin": True}])


def run_workload(server: RunningTurnout) -> list[int]:
    """Each tenant's conversation, turn by turn (tenants interleaved): cached tokens seen."""
    cached: list[int] = []
    history: dict[int, list[dict[str, str]]] = {
        t: [{"role": "system", "content": f"Tenant {t} handbook, section {t}. " * 60}]
        for t in range(TENANTS)
    }
    with server.client(ADMIN_KEY) as client:
        for turn in range(TURNS):
            for tenant, messages in history.items():
                messages.append({"role": "user", "content": f"turn {turn} of {tenant} " * 6})
                answer = client.chat.completions.create(model="m", messages=messages)  # type: ignore[arg-type]
                details = answer.usage.prompt_tokens_details if answer.usage else None
                cached.append(details.cached_tokens or 0 if details else 0)
                messages.append(
                    {"role": "assistant", "content": answer.choices[0].message.content or ""}
                )
    return cached


def hit_rate(pool: ReplicaPool) -> float:
    queries = sum(r.block_queries for r in pool.replicas)
    return sum(r.block_hits for r in pool.replicas) / queries


def test_affinity_keeps_the_working_set_in_the_pools_caches(turnout: StartTurnout) -> None:
    # Each tenant's prompt is ~2,300 characters (~36 blocks); a replica holds 100 blocks,
    # so the 8 tenants fit the pool but not one replica.
    settings = ReplicaSettings(capacity_blocks=100)
    rates: dict[str, float] = {}
    for strategy in ("affinity", "weighted"):
        with ReplicaPool(4, settings) as pool:
            cached = run_workload(turnout(pool_config(pool, strategy)))
            rates[strategy] = hit_rate(pool)
            if strategy == "affinity":
                assert sum(1 for c in cached[TENANTS:] if c > 0) >= (TURNS - 1) * TENANTS * 0.9
                assert max(r.served for r in pool.replicas) < TENANTS * TURNS  # spread out
    assert rates["affinity"] >= 0.6
    assert rates["affinity"] > rates["weighted"] + 0.2


def test_a_replica_that_dies_is_routed_around_and_the_conversation_follows(
    turnout: StartTurnout,
) -> None:
    with ReplicaPool(4, ReplicaSettings()) as pool:
        server = turnout(pool_config(pool, "affinity"))
        messages = [{"role": "system", "content": "A long shared preamble. " * 40}]
        served: list[int] = []
        with server.client(ADMIN_KEY) as client:
            for turn in range(4):
                if turn == 2:
                    pool.kill(served[-1])
                messages.append({"role": "user", "content": f"turn {turn} " * 10})
                raw = client.chat.completions.with_raw_response.create(
                    model="m",
                    messages=messages,  # type: ignore[arg-type]
                    user="conversation-1",
                )
                served.append(int(raw.headers["x-turnout-deployment"].split("/")[0][1:]))
                messages.append(
                    {"role": "assistant", "content": raw.parse().choices[0].message.content or ""}
                )
        assert served[0] == served[1]
        assert served[2] != served[1]  # the dead replica was routed around
        assert served[3] == served[2]  # and the conversation stayed where it moved
        assert pool.replicas[served[3]].per_request_cached[-1] > 0  # its cache is warm there


async def test_a_backends_own_queue_counts_as_load(turnout: StartTurnout) -> None:
    """Load Turnout did not send (another gateway's, say) is seen through `load_metrics`:
    the prompt's home replica, busy with it, is passed over; explain shows its queue."""
    settings = ReplicaSettings(max_running=1, decode_s_per_token=0.5, output_tokens=4)
    with ReplicaPool(4, settings) as pool:
        config = pool_config(pool, "affinity")
        for i, name in enumerate(config["providers"]):
            metrics = {"url": pool.replicas[i].metrics_url, "interval": 0.1}
            config["providers"][name]["load_metrics"] = metrics
        server = turnout(config)
        request = {"model": "m", "messages": [{"role": "user", "content": "hot prefix " * 30}]}
        with server.client(ADMIN_KEY) as client:
            home = client.post("/router/explain", cast_to=object, body={"request": request})
        assert isinstance(home, dict)
        winner = home["affinity"]["winner"]
        replica = pool.replicas[int(winner.split("/")[0][1:])]
        async with httpx.AsyncClient(base_url=replica.base_url, timeout=30) as direct:
            busy = [
                asyncio.create_task(direct.post("/chat/completions", json=request))
                for _ in range(6)
            ]
            try:
                for _ in range(100):  # until a scrape saw the queue
                    await asyncio.sleep(0.05)
                    answer = await asyncio.to_thread(explain_as_admin, server, request)
                    figures = {d["deployment"]: d for d in answer["affinity"]["deployments"]}
                    if (figures[winner]["backend_queue"] or 0) >= 4:
                        break
                assert figures[winner]["backend_queue"] >= 4
                assert figures[winner]["in_flight"] == 0  # none of it is Turnout's
                assert figures[winner]["overloaded"]
                assert answer["affinity"]["why"] == "spilled due to load"
                assert answer["affinity"]["winner"] != winner
            finally:
                for task in busy:
                    task.cancel()
                await asyncio.gather(*busy, return_exceptions=True)


def explain_as_admin(server: RunningTurnout, request: dict[str, Any]) -> dict[str, Any]:
    with server.client(ADMIN_KEY) as client:
        answer = client.post("/router/explain", cast_to=object, body={"request": request})
    assert isinstance(answer, dict)
    return answer
