"""Turnout's own limits are not the backend's failures: an error of kind `OWN_LIMIT` moves
on to the next deployment without a retry, and no breaker counts it (a half-open probe
that meets one is given back); this process running out of descriptors or ports is one;
a provider's start is waited for, and its failure or close is every waiter's own-limit
error."""

from __future__ import annotations

import asyncio
import errno

import aiohttp
import pytest
from aiohttp.client_reqrep import ConnectionKey

from policies.config import Deployment, TurnoutConfig
from policies.health import Health, counts_as_failure
from policies.plan import Target
from policies.retry import Decision, classify
from policies.state.base import BreakerState
from policies.state.memory import MemoryStore
from providers.errors import Failure, UpstreamError
from providers.http import mapped_transport_errors
from providers.startup import StartGate

CONFIG = TurnoutConfig.model_validate(
    {
        "providers": {"up": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
        "models": {"m": {"deployments": [{"provider": "up", "model": "x"}]}},
        "breaker": {"failures": 2, "cooldown": 5},
    }
)
TARGET = Target("m", Deployment(provider="up", model="x"))
OWN = UpstreamError.own_limit("up: closed")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_own_limit_moves_on_and_is_no_failure() -> None:
    assert OWN.failure is Failure.OWN_LIMIT
    assert (OWN.status, OWN.type) == (503, "service_unavailable")
    assert classify(OWN) is Decision.NEXT  # the next deployment, no retry of this one
    assert not counts_as_failure(OWN)


async def test_own_limits_never_open_a_breaker_and_give_a_probe_back() -> None:
    clock = Clock()
    health = Health(MemoryStore(), CONFIG, clock)
    for _ in range(5):
        assert (await health.acquire(TARGET)).allowed
        assert await health.failed(TARGET, OWN) is None
    assert (await health.views([TARGET]))[TARGET.label].state is BreakerState.CLOSED

    for _ in range(2):  # real failures open it; after the cooldown one probe goes out
        await health.failed(TARGET, UpstreamError.connect("up: refused"))
    clock.now += 6
    probe = await health.acquire(TARGET)
    assert probe.probe
    assert await health.failed(TARGET, OWN, probe=True) is None
    again = await health.acquire(TARGET)  # given back: the next call probes at once
    assert again.allowed
    assert again.probe


@pytest.mark.parametrize(
    ("code", "failure"),
    [
        (errno.EMFILE, Failure.OWN_LIMIT),
        (errno.ENFILE, Failure.OWN_LIMIT),
        (errno.EADDRNOTAVAIL, Failure.OWN_LIMIT),
        (errno.ECONNREFUSED, Failure.CONNECT),
    ],
)
def test_running_out_of_descriptors_or_ports_is_our_own_limit(code: int, failure: Failure) -> None:
    key = ConnectionKey("127.0.0.1", 9, False, True, None, None, None)
    cause = aiohttp.ClientConnectorError(key, OSError(code, "from the kernel"))
    with pytest.raises(UpstreamError) as raised, mapped_transport_errors("up"):
        raise cause
    assert raised.value.failure is failure


async def test_calls_wait_for_the_start_and_get_its_failure() -> None:
    gate = StartGate("local", "the model failed to load")
    waiting = asyncio.ensure_future(gate.wait())
    release = asyncio.Event()

    async def load() -> None:
        await release.wait()
        raise RuntimeError("weights are missing")

    starting = asyncio.ensure_future(gate.run(load()))
    await asyncio.sleep(0)
    assert not waiting.done()  # waits rather than failing while the start runs
    release.set()
    with pytest.raises(RuntimeError):
        await starting
    with pytest.raises(UpstreamError) as raised:
        await waiting
    assert raised.value.failure is Failure.OWN_LIMIT
    assert str(raised.value) == "local: the model failed to load: weights are missing"


async def test_a_started_gate_lets_calls_through_until_closed() -> None:
    gate = StartGate("up")

    async def start() -> str:
        return "opened"

    assert await gate.run(start()) == "opened"
    assert gate.started
    await gate.wait()
    gate.close()
    with pytest.raises(UpstreamError) as raised:
        await gate.wait()
    assert (raised.value.failure, str(raised.value)) == (Failure.OWN_LIMIT, "up: closed")
