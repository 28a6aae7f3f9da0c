"""Circuit breakers end to end: the official openai SDK against a real Turnout whose
breakers read an injected clock, in front of a primary and a fallback fake upstream that
count every call. Closed → open after N consecutive failures → skipped without being
touched → one probe after the cooldown → closed on success, re-opened on failure."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import openai
import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok, Status, rate_limited
from tests.manual_clock import ManualClock
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
PRIMARY = "primary/primary-model"
FALLBACK = "fallback/fallback-model"
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]
ONE_TRY = {"attempts": 1}


@pytest.fixture
def primary(upstream: FakeOpenAIUpstream) -> FakeOpenAIUpstream:
    return upstream


@pytest.fixture
def fallback(upstream_b: FakeOpenAIUpstream) -> FakeOpenAIUpstream:
    return upstream_b


def breakered(
    primary: FakeOpenAIUpstream,
    fallback: FakeOpenAIUpstream,
    breaker: dict[str, Any],
    **overrides: Any,
) -> dict[str, Any]:
    """Model `m`: the primary, then the fallback, both behind `breaker`."""
    upstreams = {"primary": primary.base_url, "fallback": fallback.base_url}
    return simple_config(upstreams, breaker=breaker, **overrides)


def served_by(server: RunningTurnout) -> str:
    """Which deployment answered one chat completion (it must succeed)."""
    with server.client() as client:
        raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    return str(raw.headers["x-turnout-deployment"])


def calls(upstream: FakeOpenAIUpstream) -> int:
    return sum(r.path == "/v1/chat/completions" for r in upstream.requests)


def test_opens_after_n_consecutive_failures_then_skips_the_primary_untouched(
    turnout: StartTurnout, primary: FakeOpenAIUpstream, fallback: FakeOpenAIUpstream
) -> None:
    config = breakered(primary, fallback, {"failures": 3, "cooldown": 10}, retry=ONE_TRY)
    server = turnout(config, ManualClock())
    primary.enqueue(Status(503), Status(503), Ok())  # a success resets the count
    primary.set_default(Status(503))

    served = [served_by(server) for _ in range(6)]
    assert served == [FALLBACK, FALLBACK, PRIMARY, FALLBACK, FALLBACK, FALLBACK]
    assert calls(primary) == 6  # the sixth call was the third failure in a row: open

    with server.client() as client:
        for _ in range(3):
            raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
            assert raw.headers["x-turnout-deployment"] == FALLBACK
            assert raw.headers["x-turnout-attempts"] == "1"  # the fallback's, nothing else
    assert calls(primary) == 6


async def test_after_the_cooldown_exactly_one_probe_reaches_the_primary(
    turnout: StartTurnout, primary: FakeOpenAIUpstream, fallback: FakeOpenAIUpstream
) -> None:
    clock = ManualClock()
    config = breakered(primary, fallback, {"failures": 1, "cooldown": 10}, retry=ONE_TRY)
    server = await asyncio.to_thread(turnout, config, clock)
    primary.enqueue(Status(503))
    primary.set_default(Ok(delay=0.3))  # the probe is still out while the others arrive

    async with server.async_client() as client:

        async def deployment() -> str:
            raw = await client.chat.completions.with_raw_response.create(
                model="m", messages=MESSAGES
            )
            return str(raw.headers["x-turnout-deployment"])

        assert await deployment() == FALLBACK  # the failure opened the breaker
        clock.advance(9.9)
        assert await deployment() == FALLBACK
        assert calls(primary) == 1

        clock.advance(0.1)
        served = await asyncio.gather(*(deployment() for _ in range(6)))
        assert sorted(served) == [FALLBACK] * 5 + [PRIMARY]
        assert calls(primary) == 2  # the one probe
        # It succeeded: closed, every request goes to the primary again.
        assert list(await asyncio.gather(deployment(), deployment())) == [PRIMARY, PRIMARY]
    assert calls(primary) == 4


def test_a_failed_probe_reopens_with_the_cooldown_restarted(
    turnout: StartTurnout, primary: FakeOpenAIUpstream, fallback: FakeOpenAIUpstream
) -> None:
    clock = ManualClock()
    config = breakered(primary, fallback, {"failures": 1, "cooldown": 10}, retry=ONE_TRY)
    server = turnout(config, clock)
    primary.enqueue(Status(503), Status(500))

    assert served_by(server) == FALLBACK  # opened
    clock.advance(10)
    assert served_by(server) == FALLBACK  # the probe failed: open for another 10 s
    assert calls(primary) == 2
    clock.advance(9)
    assert served_by(server) == FALLBACK
    assert calls(primary) == 2
    clock.advance(1)
    assert served_by(server) == PRIMARY  # the next probe succeeds and closes it
    assert served_by(server) == PRIMARY
    assert calls(primary) == 4


def test_a_429_retry_after_longer_than_the_cooldown_keeps_it_open_longer(
    turnout: StartTurnout, primary: FakeOpenAIUpstream, fallback: FakeOpenAIUpstream
) -> None:
    clock = ManualClock()
    config = breakered(primary, fallback, {"failures": 1, "cooldown": 5})
    server = turnout(config, clock)
    primary.enqueue(rate_limited(retry_after="60"))  # too long to wait: the fallback serves

    assert served_by(server) == FALLBACK
    clock.advance(30)  # well past the cooldown, not past the Retry-After
    assert served_by(server) == FALLBACK
    assert calls(primary) == 1
    clock.advance(30)
    assert served_by(server) == PRIMARY
    assert calls(primary) == 2


def test_a_flapping_primary_is_spared_during_its_outage_and_used_after(
    turnout: StartTurnout, primary: FakeOpenAIUpstream, fallback: FakeOpenAIUpstream
) -> None:
    """One request a second; the primary answers 503 for the first 20 s, then recovers.
    Without a breaker, 20 requests of 3 tries would be 60 calls to a backend that is down."""
    clock = ManualClock()
    config = breakered(primary, fallback, {"failures": 3, "cooldown": 5})  # 3 tries each
    server = turnout(config, clock)
    primary.set_default(Status(503))

    outage = []
    for _ in range(20):
        outage.append(served_by(server))
        clock.advance(1)
    assert outage == [FALLBACK] * 20
    # The first request's 3 tries opened it; then one probe per cooldown (at 5, 10, 15 s).
    assert calls(primary) == 3 + 3

    primary.set_default(Ok())
    after = []
    for _ in range(10):
        after.append(served_by(server))
        clock.advance(1)
    assert after == [PRIMARY] * 10  # the probe at 20 s succeeded and closed it
    assert calls(primary) == 6 + 10


def test_every_deployment_open_is_a_503_with_retry_after(
    turnout: StartTurnout, primary: FakeOpenAIUpstream, fallback: FakeOpenAIUpstream
) -> None:
    clock = ManualClock()
    config = breakered(primary, fallback, {"failures": 1, "cooldown": 7}, retry=ONE_TRY)
    server = turnout(config, clock)
    primary.set_default(Status(503))
    fallback.set_default(Status(503))

    with server.client() as client:
        with pytest.raises(openai.InternalServerError) as first:
            client.chat.completions.create(model="m", messages=MESSAGES)
        assert first.value.status_code == 503  # both tried, both failed: now both open

        clock.advance(2.6)
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="m", messages=MESSAGES)
    error = caught.value
    assert error.status_code == 503
    assert error.code == "deployments_unavailable"
    assert error.response.headers["retry-after"] == "5"  # 4.4 s, rounded up
    assert error.response.headers["x-turnout-attempts"] == "0"
    assert (calls(primary), calls(fallback)) == (1, 1)  # neither was touched


def test_bad_requests_do_not_open_the_breaker(
    turnout: StartTurnout, primary: FakeOpenAIUpstream, fallback: FakeOpenAIUpstream
) -> None:
    config = breakered(primary, fallback, {"failures": 1, "cooldown": 60}, retry=ONE_TRY)
    server = turnout(config, ManualClock())
    primary.enqueue(*[Status(400, message="bad `temperature`", param="temperature")] * 3)

    with server.client() as client:
        for _ in range(3):
            with pytest.raises(openai.BadRequestError):
                client.chat.completions.create(model="m", messages=MESSAGES)
    assert calls(fallback) == 0  # the request's fault: no other deployment would do better
    assert served_by(server) == PRIMARY
    assert calls(primary) == 4


def test_a_models_own_breaker_overrides_the_default(
    turnout: StartTurnout, primary: FakeOpenAIUpstream, fallback: FakeOpenAIUpstream
) -> None:
    deployments = [
        {"provider": "primary", "model": "primary-model"},
        {"provider": "fallback", "model": "fallback-model"},
    ]
    models = {
        "m": {"deployments": deployments, "breaker": {"failures": 1, "cooldown": 5}},
        "lenient": {"deployments": deployments[:1]},
    }
    upstreams = {"primary": primary.base_url, "fallback": fallback.base_url}
    config = simple_config(upstreams, models, breaker={"failures": 5}, retry=ONE_TRY)
    server = turnout(config, ManualClock())
    primary.enqueue(Status(503))

    assert served_by(server) == FALLBACK
    assert served_by(server) == FALLBACK  # open after one failure under `m`'s breaker
    assert calls(primary) == 1


def test_a_probe_answered_with_a_bad_request_frees_the_deployment(
    turnout: StartTurnout, primary: FakeOpenAIUpstream, fallback: FakeOpenAIUpstream
) -> None:
    """A 400 is the request's fault, but it is an answer: the deployment is up again, and
    must not stay half-open with its probe slot taken."""
    clock = ManualClock()
    config = breakered(primary, fallback, {"failures": 1, "cooldown": 10}, retry=ONE_TRY)
    server = turnout(config, clock)
    primary.enqueue(Status(503), Status(400, message="bad `temperature`", param="temperature"))

    assert served_by(server) == FALLBACK  # opened
    clock.advance(10)
    with server.client() as client, pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=MESSAGES)  # the probe
    assert served_by(server) == PRIMARY
    assert calls(primary) == 3


def test_a_probe_whose_client_disconnects_frees_the_deployment_at_once(
    turnout: StartTurnout, primary: FakeOpenAIUpstream, fallback: FakeOpenAIUpstream
) -> None:
    """The cancelled probe reports no outcome; it gives its slot back rather than holding
    it for `probe_timeout_s` (60 s), so the next request probes at once."""
    clock = ManualClock()
    config = breakered(primary, fallback, {"failures": 1, "cooldown": 10}, retry=ONE_TRY)
    server = turnout(config, clock)
    primary.enqueue(Status(503), Ok(delay=5))  # opens it; then the probe hangs

    assert served_by(server) == FALLBACK
    clock.advance(10)
    with server.client(timeout=0.3) as client, pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="m", messages=MESSAGES)  # the probe
    primary.wait_for_client_closes(1)  # Turnout cancelled its call upstream
    assert served_by(server) == PRIMARY  # the next probe, at once: it succeeds and closes
    assert served_by(server) == PRIMARY
    assert calls(primary) == 4


def test_a_probe_cut_by_the_request_deadline_frees_the_deployment(
    turnout: StartTurnout, primary: FakeOpenAIUpstream, fallback: FakeOpenAIUpstream
) -> None:
    clock = ManualClock()
    timeouts = {"connect": 2, "first_byte": 5, "stream_idle": 2, "total": 0.5}
    config = breakered(
        primary, fallback, {"failures": 1, "cooldown": 10}, retry=ONE_TRY, timeouts=timeouts
    )
    server = turnout(config, clock)
    primary.enqueue(Status(503), Ok(delay=3))

    assert served_by(server) == FALLBACK
    clock.advance(10)
    with server.client() as client, pytest.raises(openai.APIStatusError) as cut:
        client.chat.completions.create(model="m", messages=MESSAGES)  # the probe
    assert cut.value.status_code == 504
    assert served_by(server) == PRIMARY
    assert calls(primary) == 3


async def test_a_late_success_from_before_the_breaker_opened_does_not_close_it(
    turnout: StartTurnout, primary: FakeOpenAIUpstream, fallback: FakeOpenAIUpstream
) -> None:
    """A call sent while the breaker was closed succeeds while it is half-open: only the
    probe's outcome may close it, so the deployment stays off-limits until the probe
    answers."""
    clock = ManualClock()
    config = breakered(primary, fallback, {"failures": 1, "cooldown": 10}, retry=ONE_TRY)
    server = await asyncio.to_thread(turnout, config, clock)
    primary.enqueue(Ok(delay=1), Status(503), Ok(delay=2))  # slow; opens it; the probe

    async with server.async_client() as client:

        async def deployment() -> str:
            raw = await client.chat.completions.with_raw_response.create(
                model="m", messages=MESSAGES
            )
            return str(raw.headers["x-turnout-deployment"])

        slow = asyncio.create_task(deployment())
        await asyncio.to_thread(primary.wait_for_requests, 1)
        assert await deployment() == FALLBACK  # the 503 opened it
        clock.advance(10)
        probe = asyncio.create_task(deployment())
        await asyncio.to_thread(primary.wait_for_requests, 3)

        assert await slow == PRIMARY  # answered while half-open, the probe still out ...
        assert await deployment() == FALLBACK  # ... and the breaker did not close
        assert await probe == PRIMARY
        assert await deployment() == PRIMARY  # the probe's success closed it
    assert calls(primary) == 4
