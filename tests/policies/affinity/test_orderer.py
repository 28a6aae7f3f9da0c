"""`strategy: affinity` through `Orderer`, on real stores: turns stay together, a shared
prompt goes where it was sent, a hot prefix spills past `max_load`, two processes agree,
and session pins are shared through Redis."""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

from policies.affinity.engine import _pin_id
from policies.affinity.key import AffinityKey, affinity_key
from policies.affinity.settings import AffinitySettings
from policies.config import Deployment
from policies.plan import Target
from policies.policy_config import Strategy
from policies.redis_client import RedisAddress
from policies.state.base import StateStore
from policies.state.memory import MemoryStore
from policies.state.redis_store import RedisStore
from policies.strategies import Orderer

POOL = [Target("m", Deployment(provider=f"r{i}", model="m")) for i in range(4)]
SETTINGS = AffinitySettings()


def orderer(store: StateStore | None = None, reports: dict[str, Any] | None = None) -> Orderer:
    found = reports if reports is not None else {}
    return Orderer(
        store or MemoryStore(),
        random.Random(),
        lambda _: None,
        lambda t: found.get(t.label),
    )


@dataclass
class Report:
    """A provider's load report, as `load_report()` gives it."""

    waiting: int
    running: int
    fresh: bool
    kv_cache_usage: float | None = None


def chat(*turns: str, system: str = "You are terse. " * 10, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": system}]
    messages += [{"role": "user", "content": turn} for turn in turns]
    return {"model": "m", "messages": messages, **extra}


def key(body: dict[str, Any], headers: dict[str, str] | None = None) -> AffinityKey:
    return affinity_key(SETTINGS, body, headers or {}, "team")


async def first(order: Orderer, body: dict[str, Any], **kw: Any) -> str:
    return (await order.order(POOL, Strategy.AFFINITY, key(body, **kw)))[0].label


async def test_a_conversations_turns_stay_on_one_deployment() -> None:
    order = orderer()
    turns = [f"question {i} " * 20 for i in range(6)]
    for n in range(8):  # several conversations, each growing turn by turn
        system = f"conversation {n} " * 8
        chosen = {await first(order, chat(*turns[: i + 1], system=system)) for i in range(6)}
        assert len(chosen) == 1
    # With a session id, even a prompt that was rewritten keeps its deployment.
    a = await first(order, chat("x" * 200, user="u-1"))
    assert await first(order, chat("entirely different " * 30, user="u-1")) == a


async def test_a_shared_system_prompt_lands_where_it_was_sent() -> None:
    order = orderer()
    system = "Shared tenant instructions. " * 40
    where = await first(order, chat("first user", system=system))
    for i in range(10):
        assert await first(order, chat(f"another user {i} " * 5, system=system)) == where


async def test_a_hot_prefix_spills_once_its_deployment_passes_max_load() -> None:
    store = MemoryStore()
    order = orderer(store)
    body = chat("the same question " * 10)
    home = await first(order, body)
    # 6 calls in flight there, none elsewhere: above ceil(1.25 * 7 / 4) = 3 doubled (the
    # headroom of a deployment holding the whole prompt).
    for _ in range(6):
        await store.add_in_flight(home, 1)
    spilled = await first(order, body)
    assert spilled != home
    decision = await order.decide(POOL, key(body))
    assert decision.choice.spilled == (home,)
    await store.add_in_flight(home, -6)
    # The record followed the spill: both now hold the prefix; the longest match decides.
    assert await first(order, body) in {home, spilled}


async def test_a_turn_spilled_off_its_pin_for_load_leaves_the_pin_home() -> None:
    store = MemoryStore()
    order = orderer(store)
    home = await first(order, chat("first turn " * 20, user="u-spill"))
    await store.add_in_flight(home, 6)  # home over ceil(1.25 * 7 / 4) = 3, even doubled
    spilled = await first(order, chat("first turn " * 20, "second " * 20, user="u-spill"))
    assert spilled != home
    session = key(chat("x", user="u-spill")).session
    assert session is not None
    assert await store.session_pin(_pin_id(session.digest, "m"), time.time()) == home
    await store.add_in_flight(home, -6)
    # Home has room again: the next turn goes back where the conversation is cached.
    assert await first(order, chat("first turn " * 20, "third " * 20, user="u-spill")) == home
    # Load that stays: later turns follow the conversation's longest record, not anywhere.
    await store.add_in_flight(home, 6)
    for turn in range(4):
        body = chat("first turn " * 20, "second " * 20, f"turn {turn} " * 20, user="u-spill")
        assert await first(order, body) == spilled


async def test_pinned_turns_are_not_passed_over_for_their_share() -> None:
    order = orderer()
    body = chat("a long conversation " * 20, user="u-long")
    home = await first(order, body)
    for _ in range(200):  # far past 40 of the last 128 decisions
        assert await first(order, body) == home
    # A request without a session, with the same prompt, is held to the share.
    assert await first(order, chat("a long conversation " * 20)) != home


async def test_a_fresh_backend_report_counts_as_load_and_a_stale_one_does_not() -> None:
    reports: dict[str, Any] = {}
    order = orderer(reports=reports)
    body = chat("reported " * 20)
    home = (await order.order(POOL, Strategy.AFFINITY, key(body)))[0].label
    reports[home] = Report(waiting=5, running=8, fresh=False)
    assert await first(order, body) == home
    reports[home] = Report(waiting=5, running=8, fresh=True)
    decision = await order.decide(POOL, key(body))
    assert decision.backend == {home: 13}
    assert decision.choice.order[0] != home


async def test_a_backend_whose_kv_cache_is_full_takes_no_new_prefix_but_keeps_its_own() -> None:
    """Rule 6: a new prefix placed on a backend with a full KV cache evicts another
    tenant's (and may preempt running requests); a prefix it holds adds little."""

    reports: dict[str, Any] = {}
    order = orderer(reports=reports)
    held = chat("held prompt " * 20)
    home = await first(order, held)
    for target in POOL:  # every backend idle, one of them with its KV cache full
        reports[target.label] = Report(0, 0, True, 0.95 if target.label == home else 0.2)
    assert await first(order, chat("held prompt " * 20, "next turn " * 20)) == home
    # A new prompt that would go to `home` by rendezvous goes elsewhere while it is full.
    for i in range(200):
        body = chat(f"new tenant {i} " * 20)
        decision = await order.decide(POOL, key(body))
        if max(decision.candidates, key=lambda c: c.score).label == home:
            assert decision.choice.order[0] != home
            assert next(c for c in decision.candidates if c.label == home).full
            break
    else:
        raise AssertionError("no prompt hashed to the full backend first")
    # Every backend full: the request still goes somewhere (the least loaded).
    for target in POOL:
        reports[target.label] = Report(0, 0, True, 0.99)
    assert await first(order, chat("another new tenant " * 20)) in {t.label for t in POOL}


async def test_two_processes_without_shared_memory_choose_alike() -> None:
    one, two = orderer(), orderer()
    for i in range(40):
        body = chat(f"workload {i} " * 10, system=f"tenant {i % 7} prompt " * 6)
        assert await first(one, body) == await first(two, body)
    # The choices spread over the pool rather than all landing on one deployment.
    spread = {await first(orderer(), chat("q", system=f"tenant {i} " * 20)) for i in range(40)}
    assert len(spread) >= 3


async def test_the_pin_follows_the_deployment_that_answered() -> None:
    order = orderer()
    body = chat("pinned " * 20, user="u-9")
    home = await first(order, body)
    other = next(t for t in POOL if t.label != home)
    await order.served(key(body), other)  # e.g. home's breaker was open
    changed = chat("a rewritten prompt " * 20, user="u-9")
    assert await first(order, changed) == other.label


async def test_session_pins_are_shared_through_redis(redis_url: str) -> None:
    prefix = f"test:{uuid.uuid4().hex}:"
    stores = [RedisStore.from_url(RedisAddress(url=redis_url), prefix=prefix) for _ in range(2)]
    try:
        one, two = orderer(stores[0]), orderer(stores[1])
        body = chat("hello " * 20, user="shared-session")
        home = await first(one, body)
        other = next(t for t in POOL if t.label != home)
        await one.served(key(body), other)  # process one moved the session
        # Process two never saw this session's prompt: the pin alone sends it there.
        assert await first(two, chat("new text " * 20, user="shared-session")) == other.label
        session = key(body).session
        assert session is not None
        assert await stores[1].session_pin(_pin_id(session.digest, "m"), 0.0) == other.label
    finally:
        for store in stores:
            await store.aclose()


async def test_memory_pins_expire() -> None:
    store = MemoryStore()
    await store.pin_session("s", "r1", now=100.0, ttl_s=10.0)
    assert await store.session_pin("s", now=105.0) == "r1"
    assert await store.session_pin("s", now=111.0) is None


async def test_other_strategies_compute_no_affinity() -> None:
    order = orderer()
    assert [t.label for t in await order.order(POOL, Strategy.PRIORITY, None)] == [
        t.label for t in POOL
    ]
    assert len(await order.order(POOL, Strategy.AFFINITY, None)) == 4  # no key: config order


async def test_share_windows_are_bounded_however_many_pools_clients_choose() -> None:
    """A client narrows its plan's deployments (router.only / ignore): each set gets its
    own window, and the number of windows is bounded."""
    from policies.affinity.engine import MAX_POOLS, AffinityRouter

    router = AffinityRouter(MemoryStore(), lambda _: None)
    labels = [f"d{i}" for i in range(12)]
    for i in range(MAX_POOLS + 50):
        pool = [label for bit, label in enumerate(labels) if (i + 3) >> bit & 1][:6]
        if len(pool) >= 2:
            await router.order(pool, key(chat(f"request {i} " * 10)))
    assert len(router._shares) <= MAX_POOLS
