"""Each routing strategy's ordering: unit tests of the orderings with a seeded RNG and a
real in-memory store, and through a real Turnout with the official SDK."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from policies.config import Deployment
from policies.plan import Target
from policies.policy_config import Price, Strategy
from policies.state.memory import MemoryStore
from policies.strategies import Orderer, two_choices_order, weighted_order
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[[dict[str, Any]], RunningTurnout]
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


def target(provider: str, model: str = "m", **fields: Any) -> Target:
    return Target(model, Deployment(provider=provider, model=f"{provider}-x", **fields))


def labels(targets: list[Target]) -> list[str]:
    return [t.deployment.provider for t in targets]


async def test_priority_keeps_config_order() -> None:
    order = Orderer(MemoryStore(), random.Random(1), lambda _: None)
    group = [target("a"), target("b"), target("c")]
    assert labels(await order.order(group, Strategy.PRIORITY)) == ["a", "b", "c"]


def test_weighted_order_follows_the_weights() -> None:
    rng = random.Random(7)
    group = [target("a", weight=1), target("b", weight=3)]
    firsts = Counter(weighted_order(group, rng)[0].deployment.provider for _ in range(4000))
    assert 0.70 < firsts["b"] / 4000 < 0.80  # 3 / (1 + 3) = 0.75


def test_two_choices_prefers_the_faster_and_measures_the_unmeasured() -> None:
    rng = random.Random(3)
    group = [target("slow"), target("fast")]
    latency = {"slow/slow-x": 0.9, "fast/fast-x": 0.1}
    assert all(
        labels(two_choices_order(group, latency, rng)) == ["fast", "slow"] for _ in range(50)
    )
    unmeasured = [target("slow"), target("new")]
    assert labels(two_choices_order(unmeasured, {"slow/slow-x": 0.9}, rng))[0] == "new"


async def test_least_busy_counts_in_flight_calls_and_local_queues() -> None:
    store = MemoryStore()
    await store.add_in_flight("a/a-x", 3)
    queues = {"c": 5}
    order = Orderer(store, random.Random(1), lambda t: queues.get(t.deployment.provider))
    group = [target("a"), target("b"), target("c")]
    assert labels(await order.order(group, Strategy.LEAST_BUSY)) == ["b", "a", "c"]


async def test_cost_puts_the_cheapest_first_and_unpriced_last() -> None:
    order = Orderer(MemoryStore(), random.Random(1), lambda _: None)
    group = [
        target("dear", price=Price(prompt=10, completion=30)),
        target("free"),
        target("cheap", price=Price(prompt=0.1, completion=0.2)),
    ]
    assert labels(await order.order(group, Strategy.COST)) == ["cheap", "dear", "free"]


async def test_cost_reads_the_prices_requests_are_charged_at() -> None:
    """With a price book (the shipped table's prices included), deployments without a
    `price:` of their own are sorted by the price their calls are charged at."""
    group = [target("gpt-4o"), target("mini"), target("own", price=Price(prompt=1))]
    table = {"gpt-4o-x": Price(prompt=2.5, completion=10), "mini-x": Price(prompt=0.15)}
    order = Orderer(
        MemoryStore(),
        random.Random(1),
        lambda _: None,
        price_of=lambda t: t.deployment.price or table.get(t.deployment.model),
    )
    assert labels(await order.order(group, Strategy.COST)) == ["mini", "own", "gpt-4o"]


async def test_fallback_models_keep_their_place_in_the_chain() -> None:
    order = Orderer(MemoryStore(), random.Random(1), lambda _: None)
    chain = [
        target("dear", price=Price(prompt=9)),
        target("cheap", price=Price(prompt=1)),
        target("fallback-dear", model="f", price=Price(prompt=9)),
        target("fallback-cheap", model="f", price=Price(prompt=1)),
    ]
    assert labels(await order.order(chain, Strategy.COST)) == [
        "cheap",
        "dear",
        "fallback-cheap",
        "fallback-dear",
    ]


def two_deployments(
    first: FakeOpenAIUpstream, second: FakeOpenAIUpstream, strategy: str, **deployment: Any
) -> dict[str, Any]:
    """Model `m` on providers `a` and `b`; keyword `a={...}` adds to a's deployment."""
    config = simple_config({"a": first.base_url, "b": second.base_url})
    config["models"]["m"]["strategy"] = strategy
    for entry in config["models"]["m"]["deployments"]:
        entry.update(deployment.get(entry["provider"], {}))
    return config


def test_cost_strategy_through_turnout(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    config = two_deployments(
        upstream,
        upstream_b,
        "cost",
        a={"price": {"prompt": 5, "completion": 15}},
        b={"price": {"prompt": 0.5, "completion": 1.5}},
    )
    reply = (
        turnout(config)
        .client()
        .chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    )
    assert reply.headers["x-turnout-deployment"] == "b/b-model"


def test_weighted_strategy_through_turnout(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    config = two_deployments(upstream, upstream_b, "weighted", a={"weight": 1}, b={"weight": 4})
    client = turnout(config).client()
    for _ in range(60):
        client.chat.completions.create(model="m", messages=MESSAGES)
    assert len(upstream_b.requests) > len(upstream.requests) > 0


def test_least_latency_moves_traffic_to_the_faster_deployment(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Ok(delay=0.15))
    client = turnout(two_deployments(upstream, upstream_b, "least-latency")).client()
    for _ in range(12):
        client.chat.completions.create(model="m", messages=MESSAGES)
    # Once both are measured every pair drawn puts b first: a is tried only while unmeasured.
    assert len(upstream.requests) <= 2
    assert len(upstream_b.requests) >= 10


def test_least_busy_spreads_concurrent_requests(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Ok(delay=0.3))
    upstream_b.set_default(Ok(delay=0.3))
    running = turnout(two_deployments(upstream, upstream_b, "least-busy"))

    async def burst() -> None:
        client = running.async_client()
        first = asyncio.create_task(client.chat.completions.create(model="m", messages=MESSAGES))
        await asyncio.sleep(0.1)  # the first is in flight on `a`
        await client.chat.completions.create(model="m", messages=MESSAGES)
        await first

    asyncio.run(burst())
    assert len(upstream.requests) == 1
    assert len(upstream_b.requests) == 1


@pytest.mark.parametrize(
    "strategy", ["priority", "weighted", "least-latency", "least-busy", "cost"]
)
def test_every_strategy_still_skips_what_cannot_serve(
    turnout: StartTurnout,
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
    strategy: str,
) -> None:
    config = two_deployments(upstream, upstream_b, strategy, a={"capabilities": {"seed": False}})
    client = turnout(config).client()
    for _ in range(3):
        reply = client.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, seed=1
        )
        assert reply.headers["x-turnout-deployment"] == "b/b-model"
    assert upstream.requests == []
