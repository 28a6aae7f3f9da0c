"""`Health` keeps every counted outcome for the status page (`StateStore.record_call`) off
the request's path: with a shared store's deferred writes, a success or a failure returns
before the store has answered that write, and the call is kept once it has."""

from __future__ import annotations

import asyncio

from policies.config import Deployment, TurnoutConfig
from policies.deferred import Deferred
from policies.health import Health
from policies.plan import Target
from policies.state.base import CallSample
from policies.state.memory import MemoryStore
from providers.errors import UpstreamError
from tests.manual_clock import NOON, ManualClock

CONFIG = TurnoutConfig.model_validate(
    {
        "providers": {"up": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "models": {"m": {"deployments": [{"provider": "up", "model": "x"}]}},
        "breaker": {"failures": 5, "cooldown": 5},
    }
)
TARGET = Target("m", Deployment(provider="up", model="x"))


class SlowRecords(MemoryStore):
    """A store whose `record_call` waits until the test lets it answer, as a slow Redis."""

    def __init__(self) -> None:
        super().__init__()
        self.answer = asyncio.Event()
        self.waiting = 0

    async def record_call(
        self,
        deployment: str,
        now: float,
        ok: bool,
        seconds: float | None,
        first_token_s: float | None = None,
    ) -> None:
        self.waiting += 1
        await self.answer.wait()
        await super().record_call(deployment, now, ok, seconds, first_token_s)


async def test_outcomes_are_kept_without_waiting_for_the_store() -> None:
    store, deferred = SlowRecords(), Deferred(immediate=False)
    health = Health(store, CONFIG, ManualClock(), deferred=deferred)
    await asyncio.wait_for(health.succeeded(TARGET, 0.25, first_token_s=0.125), 1.0)
    await asyncio.wait_for(health.failed(TARGET, UpstreamError.timeout("slow")), 1.0)
    await asyncio.wait_for(health.succeeded(TARGET), 1.0)  # a health check: no latency
    await asyncio.sleep(0)
    assert store.waiting == 3  # all three writes issued, none answered yet
    assert (await store.recent_calls([TARGET.label], 0.0))[TARGET.label] == []

    store.answer.set()
    await deferred.drain()
    kept = list((await store.recent_calls([TARGET.label], 0.0))[TARGET.label])
    assert sorted(kept, key=lambda s: (s.ok, s.seconds or 0)) == [
        CallSample(NOON, False, None, None),
        CallSample(NOON, True, None, None),
        CallSample(NOON, True, 0.25, 0.125),
    ]


async def test_an_own_limit_is_not_kept() -> None:
    store = MemoryStore()
    health = Health(store, CONFIG, ManualClock())
    await health.failed(TARGET, UpstreamError.own_limit("up: closed"))
    assert (await store.recent_calls([TARGET.label], 0.0))[TARGET.label] == []
