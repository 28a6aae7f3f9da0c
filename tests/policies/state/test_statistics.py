"""Routing statistics in both stores: latency EWMA and in-flight counts, shared by replicas."""

from __future__ import annotations

import asyncio

import pytest

from tests.policies.state.conftest import OpenStore


async def test_latency_ewma_starts_at_the_first_sample(open_store: OpenStore) -> None:
    store, replica = open_store(), open_store()
    assert await store.latencies(["a", "b"]) == {}

    await store.observe_latency("a", 1.0, alpha=0.2)
    assert await store.latencies(["a", "b"]) == {"a": 1.0}

    await replica.observe_latency("a", 2.0, alpha=0.2)
    assert await store.latencies(["a", "b"]) == {"a": pytest.approx(1.2)}
    await store.observe_latency("b", 0.25, alpha=0.5)
    assert await replica.latencies(["a", "b"]) == {"a": pytest.approx(1.2), "b": 0.25}
    assert await replica.latencies([]) == {}


async def test_in_flight_sums_over_replicas_and_never_goes_negative(open_store: OpenStore) -> None:
    store, replica = open_store(), open_store()
    assert await store.in_flight(["a", "b"]) == {"a": 0, "b": 0}

    await asyncio.gather(*(s.add_in_flight("a", 1) for s in [store, replica] * 5))
    await replica.add_in_flight("b", 1)
    assert await store.in_flight(["a", "b"]) == {"a": 10, "b": 1}

    await asyncio.gather(*(s.add_in_flight("a", -1) for s in [store, replica] * 6))
    assert await replica.in_flight(["a", "b"]) == {"a": 0, "b": 1}
    await store.add_in_flight("a", 1)  # the extra -1 left no debt behind
    assert await replica.in_flight(["a"]) == {"a": 1}
