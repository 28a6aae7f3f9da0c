"""Hedging's numbers and its statistics, the dispatcher's hedged walk with in-process
deployments, and the `hedge:` and per-model `timeouts:` config keys."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest

from policies.config import TimeoutSettings, TurnoutConfig
from policies.deferred import Deferred
from policies.dispatch import Dispatcher
from policies.health import Health
from policies.hedge import FirstTokenStats
from policies.loading import ConfigError, load_config
from policies.plan import plan_request
from policies.policy_config import HedgeSettings
from policies.state.memory import MemoryStore
from providers.base import Provider
from providers.errors import UpstreamError
from providers.timeouts import TimeoutOverrides, UpstreamTimeouts
from providers.types import Endpoint, JSONObject, ProviderRequest, ProviderResponse
from tests.manual_clock import ManualClock

BODY: dict[str, Any] = {"messages": [{"role": "user", "content": "hi"}], "stream": True}


# --- the numbers ----------------------------------------------------------------------


def test_default_adaptive_delay_keeps_its_promises() -> None:
    hedge = HedgeSettings()
    assert hedge.enabled
    assert (hedge.after, hedge.max) == ("auto", 1)
    # Unmeasured: the cap, 30 s; a silent upstream is hedged then, long before first_byte.
    assert hedge.delay(None) == 30.0 < TimeoutSettings().first_byte == 120.0
    # Even a deployment whose estimate grew past anything is hedged by the cap: a healthy
    # fallback has 10 s to answer within the promised 40 s.
    assert hedge.delay(1e6) == 30.0 <= 40.0 - 10.0
    # Fast deployments: the floor, so ordinary jitter is not hedged.
    assert hedge.delay(0.1) == 2.0
    assert hedge.delay(4.0) == 12.0  # 3 x p95 in between
    # A reasoning model with a p95 of 20 s is hedged only past 30 s: not on every call.
    assert hedge.delay(20.0) == 30.0 > 20.0


def test_a_fixed_delay_ignores_statistics() -> None:
    assert HedgeSettings(after=0.5).delay(None) == HedgeSettings(after=0.5).delay(100) == 0.5


async def test_p95_estimate_from_the_mean_and_its_deviation() -> None:
    stats = FirstTokenStats(MemoryStore(), Deferred(immediate=True))
    assert await stats.p95("a/x") is None
    await stats.observe("a/x", 1.0)
    assert await stats.p95("a/x") == pytest.approx(2.0)  # mean 1, deviation 1/2 (RFC 6298)
    await stats.observe("a/x", 3.0)
    # deviation 0.75 * 0.5 + 0.25 * |3 - 1| = 0.875; mean 0.875 * 1 + 0.125 * 3 = 1.25
    assert await stats.p95("a/x") == pytest.approx(1.25 + 2 * 0.875)
    for _ in range(60):  # steady: the deviation decays, the estimate nears the mean
        await stats.observe("a/x", 0.2)
    p95 = await stats.p95("a/x")
    assert p95 is not None
    assert 0.2 <= p95 < 0.21
    assert HedgeSettings().delay(p95) == 2.0


# --- the hedged walk, with in-process deployments ----------------------------------------


class Scripted(Provider):
    """A deployment whose stream yields its first chunk after `first` is set (at once when
    None); records whether its stream was closed before it finished."""

    def __init__(self, name: str, first: asyncio.Event | None = None) -> None:
        super().__init__(name)
        self.first = first
        self.closed_early = False
        self.calls = 0

    @property
    def endpoints(self) -> frozenset[Endpoint]:
        return frozenset({Endpoint.CHAT})

    async def complete(self, request: ProviderRequest) -> ProviderResponse:
        raise AssertionError("streams only")

    async def stream(self, request: ProviderRequest) -> AsyncGenerator[JSONObject, None]:
        self.calls += 1
        done = False
        try:
            if self.first is not None:
                await self.first.wait()
            yield {"choices": [{"index": 0, "delta": {"content": self.name}}]}
            done = True
        finally:
            self.closed_early = not done

    async def aclose(self) -> None:
        pass


def setup(
    hedge: dict[str, Any], *providers: Scripted, total: float = 60
) -> tuple[Dispatcher, Any, Health, Any]:
    config = TurnoutConfig.model_validate(
        {
            "timeouts": {"total": total},
            "providers": {p.name: {"kind": "openai", "base_url": "http://x"} for p in providers},
            "models": {
                "m": {"deployments": [{"provider": p.name, "model": "x"} for p in providers]}
            },
            "breaker": {"failures": 1},
            "hedge": hedge,
        }
    )
    store = MemoryStore()
    health = Health(store, config, ManualClock())
    stats = FirstTokenStats(store, Deferred(immediate=True))
    dispatcher = Dispatcher({p.name: p for p in providers}, health=health, first_tokens=stats)
    return dispatcher, plan_request(config, "m"), health, stats


async def test_the_adaptive_delay_comes_from_the_deployments_statistics() -> None:
    slow, fast = Scripted("a", asyncio.Event()), Scripted("b")
    # floor 0.05 s: a, measured at 10 ms, is hedged after 50 ms rather than the 60 s cap.
    dispatcher, plan, health, stats = setup({"floor": 0.05, "cap": 60}, slow, fast)
    for _ in range(5):
        await stats.observe("a/x", 0.01)
    before = await stats.p95("a/x")
    trace = dispatcher.start_trace(plan)

    opened = await asyncio.wait_for(dispatcher.open_stream(plan, Endpoint.CHAT, BODY, trace), 10)

    assert opened.first["choices"][0]["delta"]["content"] == "b"
    assert slow.closed_early  # the loser's stream was closed ...
    assert [(a.deployment, a.outcome) for a in trace.attempts] == [
        ("b/x", "ok"),
        ("a/x", "hedge_lost"),
    ]
    assert trace.hedges == ["won"]
    view = (await health.views(plan.targets))["a/x"]
    assert view.consecutive_failures == 0  # ... and no failure for its breaker
    assert view.allowed
    # The loss taught the statistics that a can take longer: a lower bound, folded in.
    grown = await stats.p95("a/x")
    assert grown is not None
    assert before is not None
    assert grown > before
    await opened.rest.aclose()


async def test_no_hedge_when_the_first_content_comes_in_time() -> None:
    first, second = Scripted("a"), Scripted("b")
    dispatcher, plan, _, _ = setup({"after": 5}, first, second)
    trace = dispatcher.start_trace(plan)

    opened = await dispatcher.open_stream(plan, Endpoint.CHAT, BODY, trace)

    assert opened.first["choices"][0]["delta"]["content"] == "a"
    assert second.calls == 0
    assert trace.hedges == []
    await opened.rest.aclose()


async def test_hedging_off_waits_for_the_first_call() -> None:
    gate = asyncio.Event()
    first, second = Scripted("a", gate), Scripted("b")
    dispatcher, plan, _, _ = setup({"after": None, "floor": 0, "cap": 0.01}, first, second)
    assert plan.hedge is None
    trace = dispatcher.start_trace(plan)
    opening = asyncio.ensure_future(dispatcher.open_stream(plan, Endpoint.CHAT, BODY, trace))
    await asyncio.sleep(0.1)
    gate.set()

    opened = await opening

    assert opened.first["choices"][0]["delta"]["content"] == "a"
    assert second.calls == 0
    await opened.rest.aclose()


# --- config ---------------------------------------------------------------------------


def test_a_models_hedge_keys_replace_the_top_levels_one_by_one() -> None:
    config = TurnoutConfig.model_validate(
        {
            "providers": {"a": {"kind": "openai", "base_url": "http://x"}},
            "hedge": {"cap": 10, "max": 2},
            "models": {
                "m": {"deployments": [{"provider": "a", "model": "x"}], "hedge": {"max": 1}},
                "off": {"deployments": [{"provider": "a", "model": "x"}], "hedge": False},
                "plain": {"deployments": [{"provider": "a", "model": "x"}]},
            },
        }
    )
    hedge = plan_request(config, "m").hedge
    assert hedge is not None
    assert (hedge.max, hedge.cap, hedge.after) == (1, 10, "auto")
    assert plan_request(config, "off").hedge is None
    plain = plan_request(config, "plain").hedge
    assert plain is not None
    assert (plain.max, plain.cap) == (2, 10)


def test_a_models_timeouts_give_its_deadline_and_its_calls_timeouts() -> None:
    config = TurnoutConfig.model_validate(
        {
            "providers": {"a": {"kind": "openai", "base_url": "http://x"}},
            "timeouts": {"total": 100},
            "models": {
                "m": {"deployments": [{"provider": "a", "model": "x"}], "fallbacks": ["own"]},
                "own": {
                    "deployments": [{"provider": "a", "model": "y"}],
                    "timeouts": {"first_byte": 0.5, "total": 20},
                },
            },
        }
    )
    plan = plan_request(config, "m")
    assert plan.deadline_s == 100
    assert [plan.timeouts_for(t) for t in plan.targets] == [None, TimeoutOverrides(None, 0.5)]
    assert plan_request(config, "own").deadline_s == 20
    assert config.longest_total == 100


def test_overrides_replace_only_the_keys_they_give() -> None:
    provider = UpstreamTimeouts(connect=1, first_byte=10, stream_idle=20)
    got = TimeoutOverrides(first_byte=0.5).applied_to(provider)
    assert (got.connect, got.first_byte, got.stream_idle) == (1, 0.5, 20)
    assert TimeoutOverrides().applied_to(provider) is provider


BAD = {
    "timeouts-zero": (
        "models: {m: {deployments: [{provider: a, model: x}], timeouts: {first_byte: 0}}}",
        "models.m.timeouts.first_byte",
    ),
    "timeouts-unknown": (
        "models: {m: {deployments: [{provider: a, model: x}], timeouts: {first_token: 1}}}",
        "models.m.timeouts.first_token",
    ),
    "hedge-after": ("hedge: {after: -1}", "hedge.after"),
    "hedge-after-text": ("hedge: {after: soon}", "hedge.after"),
    "hedge-max": (
        "models: {m: {deployments: [{provider: a, model: x}], hedge: {max: -1}}}",
        "models.m.hedge.max",
    ),
    "hedge-floor": ("hedge: {floor: 40}", "floor (40.0) is above cap (30.0)"),
    "hedge-shape": ("hedge: sometimes", "hedge"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_invalid_values_are_refused_with_their_key_path(tmp_path: Path, case: str) -> None:
    text, where = BAD[case]
    path = tmp_path / "turnout.yaml"
    path.write_text("providers: {a: {kind: openai, base_url: 'http://x'}}\n" + text + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert where in str(caught.value)


async def test_the_deadline_ends_a_hedged_walk_like_any_other() -> None:
    first, second = Scripted("a", asyncio.Event()), Scripted("b", asyncio.Event())
    dispatcher, plan, _, _ = setup({"after": 0.05}, first, second, total=0.3)
    trace = dispatcher.start_trace(plan)

    with pytest.raises(UpstreamError) as caught:
        await dispatcher.open_stream(plan, Endpoint.CHAT, BODY, trace)

    assert caught.value.status == 504
    assert [(a.deployment, a.outcome) for a in trace.attempts] == [
        ("a/x", "timeout: request deadline"),
        ("b/x", "timeout: request deadline"),
    ]
    assert trace.hedges == ["cancelled"]
    assert first.closed_early
    assert second.closed_early
