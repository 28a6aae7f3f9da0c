"""Active health checks end to end: a real Turnout whose breakers read an injected clock,
in front of fake upstreams that count every request. With no traffic at all, failing checks
open a deployment's breaker (explain and /metrics say so) and requests go to the fallback
without touching it; once the upstream recovers, a check past the cooldown is the probe
that closes it; a check still failing then re-opens it instead; providers without
`health_check` get no requests; checks stop with the gateway (shutdown, reload)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest
import structlog

from policies.config import TurnoutConfig
from router.gateway import Gateway
from tests.fakes.anthropic_upstream import FakeAnthropicUpstream, overloaded
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok, Status
from tests.manual_clock import ManualClock
from tests.router.test_metrics import scrape, value
from tests.router.test_reload import ReloadingTurnout, write
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
Logs = list[dict[str, Any]]
ADMIN = "sk-admin"
PRIMARY = "primary/primary-model"
FALLBACK = "fallback/fallback-model"
MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]
FAST = {"interval": 0.05, "timeout": 2}
COOLDOWN = 10


@pytest.fixture
def primary(upstream: FakeOpenAIUpstream) -> FakeOpenAIUpstream:
    return upstream


@pytest.fixture
def fallback(upstream_b: FakeOpenAIUpstream) -> FakeOpenAIUpstream:
    return upstream_b


@pytest.fixture
def claude() -> Iterator[FakeAnthropicUpstream]:
    with FakeAnthropicUpstream() as fake:
        yield fake


@pytest.fixture
def logs() -> Iterator[Logs]:
    with structlog.testing.capture_logs() as captured:
        yield captured


def checked_config(primary: FakeOpenAIUpstream, fallback: FakeOpenAIUpstream) -> dict[str, Any]:
    """Model `m`: the primary (checked every 50 ms), then the fallback (never checked)."""
    config = simple_config(
        {"primary": primary.base_url, "fallback": fallback.base_url},
        breaker={"failures": 3, "cooldown": COOLDOWN},
        retry={"attempts": 1},
        keys=[{"key": ADMIN, "admin": True}],
    )
    config["providers"]["primary"] |= {"api_key": "sk-upstream", "health_check": FAST}
    return config


def wait_for(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return result


def breaker(server: RunningTurnout, label: str = PRIMARY) -> str:
    """The deployment's breaker state, as `POST /v1/router/explain` reports it."""
    with server.client(ADMIN) as client:
        query = {"request": {"model": "m", "messages": MESSAGES}}
        answer = client.post("/router/explain", cast_to=object, body=query)
    assert isinstance(answer, dict)
    [entry] = [d for d in answer["deployments"] if d["deployment"] == label]
    return str(entry["breaker"])


def served_by(server: RunningTurnout) -> str:
    with server.client(ADMIN) as client:
        raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    assert raw.headers["x-turnout-attempts"] == "1"
    return str(raw.headers["x-turnout-deployment"])


def calls(upstream: FakeOpenAIUpstream) -> int:
    return sum(r.method == "POST" for r in upstream.requests)


def checks(upstream: FakeOpenAIUpstream) -> int:
    return sum(r.method == "GET" and r.path == "/v1/models" for r in upstream.requests)


def events(logs: Logs, name: str) -> Logs:
    return [entry for entry in list(logs) if entry["event"] == name]


def test_failing_checks_open_the_breaker_with_no_traffic(
    primary: FakeOpenAIUpstream,
    fallback: FakeOpenAIUpstream,
    logs: Logs,
    turnout: StartTurnout,
) -> None:
    primary.set_models_behavior(Status(503))
    server = turnout(checked_config(primary, fallback), ManualClock())

    wait_for(lambda: breaker(server) == "open")
    assert checks(primary) >= 3  # `failures: 3` failed checks in a row
    assert calls(primary) == 0
    assert value(scrape(server), "turnout_breaker_state", deployment=PRIMARY) == 2
    assert [served_by(server) for _ in range(3)] == [FALLBACK] * 3
    assert calls(primary) == 0  # skipped without being touched

    seen = checks(primary)
    wait_for(lambda: checks(primary) >= seen + 3)  # failing on: logged once, not each time
    [failed] = events(logs, "health_check_failed")
    assert failed["provider"] == "primary"
    assert failed["error"] == "503 server_error"
    assert failed["log_level"] == "warning"
    assert breaker(server, FALLBACK) == "closed"


def test_a_recovered_upstream_is_closed_by_the_checks_probe_after_the_cooldown(
    primary: FakeOpenAIUpstream,
    fallback: FakeOpenAIUpstream,
    logs: Logs,
    turnout: StartTurnout,
) -> None:
    clock = ManualClock()
    primary.set_models_behavior(Status(503))
    server = turnout(checked_config(primary, fallback), clock)
    wait_for(lambda: breaker(server) == "open")

    primary.set_models_behavior(Ok())
    seen = checks(primary)
    wait_for(lambda: checks(primary) >= seen + 3)
    assert breaker(server) == "open"  # within the cooldown a good check changes nothing
    assert served_by(server) == FALLBACK

    clock.advance(COOLDOWN)
    wait_for(lambda: breaker(server) == "closed")  # the next check took the probe
    assert calls(primary) == 0  # no client request was risked on it
    assert value(scrape(server), "turnout_breaker_state", deployment=PRIMARY) == 0
    assert [served_by(server) for _ in range(3)] == [PRIMARY] * 3
    assert len(events(logs, "health_check_failed")) == 1
    assert len(events(logs, "health_check_recovered")) == 1


def test_a_check_still_failing_after_the_cooldown_reopens_the_breaker(
    primary: FakeOpenAIUpstream, fallback: FakeOpenAIUpstream, turnout: StartTurnout
) -> None:
    clock = ManualClock()
    primary.set_models_behavior(Status(503))
    server = turnout(checked_config(primary, fallback), clock)
    wait_for(lambda: breaker(server) == "open")

    clock.advance(COOLDOWN)  # half-open until a check takes the probe, fails and re-opens
    wait_for(lambda: breaker(server) == "open")
    clock.advance(COOLDOWN - 0.1)
    assert breaker(server) == "open"  # the cooldown restarted when the check failed
    assert served_by(server) == FALLBACK
    assert calls(primary) == 0


def test_checks_go_only_to_providers_that_ask_for_them_with_their_auth(
    primary: FakeOpenAIUpstream, fallback: FakeOpenAIUpstream, turnout: StartTurnout
) -> None:
    turnout(checked_config(primary, fallback))

    wait_for(lambda: checks(primary) >= 3)
    check = primary.requests[0]
    assert (check.method, check.path, check.body) == ("GET", "/v1/models", b"")
    assert check.headers["authorization"] == "Bearer sk-upstream"
    assert fallback.requests == []  # no `health_check`: no requests at all
    gaps = [b.time - a.time for a, b in zip(primary.requests, primary.requests[1:], strict=False)]
    assert all(gap >= FAST["interval"] * 0.85 for gap in gaps)  # jittered, never bunched


def test_a_successful_check_does_not_clear_failures_of_real_calls(
    primary: FakeOpenAIUpstream, fallback: FakeOpenAIUpstream, turnout: StartTurnout
) -> None:
    """Completions fail while the model list answers: the breaker still opens on the calls."""
    server = turnout(checked_config(primary, fallback), ManualClock())
    wait_for(lambda: checks(primary) >= 2)
    primary.set_default(Status(500))

    served = []
    for _ in range(3):
        served.append(served_by_any(server))
        seen = checks(primary)
        wait_for(lambda: checks(primary) > seen)  # noqa: B023 - used at once
    assert served == [FALLBACK] * 3
    assert breaker(server) == "open"
    assert calls(primary) == 3


def served_by_any(server: RunningTurnout) -> str:
    """Which deployment answered (after however many attempts)."""
    with server.client(ADMIN) as client:
        raw = client.chat.completions.with_raw_response.create(model="m", messages=MESSAGES)
    return str(raw.headers["x-turnout-deployment"])


def test_checks_stop_when_turnout_shuts_down(
    primary: FakeOpenAIUpstream, fallback: FakeOpenAIUpstream, turnout: StartTurnout
) -> None:
    server = turnout(checked_config(primary, fallback))
    wait_for(lambda: checks(primary) >= 2)

    server.stop()
    time.sleep(0.1)  # a check sent just before the stop may still be reaching the upstream
    stopped = checks(primary)
    time.sleep(0.3)  # six intervals
    assert checks(primary) == stopped


async def test_closing_the_gateway_stops_its_checks_at_once(
    primary: FakeOpenAIUpstream, fallback: FakeOpenAIUpstream
) -> None:
    gateway = Gateway.from_config(TurnoutConfig.model_validate(checked_config(primary, fallback)))
    await gateway.begin_start()
    assert gateway.health_checks is not None
    assert gateway.health_checks.running
    await asyncio.to_thread(primary.wait_for_requests, 2)  # checks: nothing else calls it

    await gateway.aclose()
    assert not gateway.health_checks.running
    stopped = checks(primary)
    await asyncio.sleep(0.3)  # the loop goes on: only the checks have stopped
    assert checks(primary) == stopped


def test_a_reload_stops_the_old_gateways_checks_and_starts_the_new_ones(
    tmp_path: Path, primary: FakeOpenAIUpstream
) -> None:
    path = tmp_path / "turnout.yaml"
    config = simple_config({"primary": primary.base_url})
    config["providers"]["primary"]["health_check"] = FAST
    write(path, config)
    server = ReloadingTurnout(path).start()
    try:
        old = server.app.state.gateway
        wait_for(lambda: checks(primary) >= 2)

        config["models"]["m2"] = {"deployments": [{"provider": "primary", "model": "other"}]}
        write(path, config)
        assert server.reload()
        new = server.app.state.gateway
        assert new is not old
        assert "primary" in new.reused  # the same provider, checked by the new gateway only
        wait_for(lambda: not old.health_checks.running)
        assert new.health_checks.running
        seen = checks(primary)
        wait_for(lambda: checks(primary) >= seen + 2)

        del config["providers"]["primary"]["health_check"]
        write(path, config)
        assert server.reload()
        wait_for(lambda: not new.health_checks.running)
        time.sleep(0.1)  # a check cancelled in flight may still land
        stopped = checks(primary)
        time.sleep(0.3)
        assert checks(primary) == stopped
    finally:
        server.stop()


def test_an_anthropic_provider_is_checked_on_its_models_api(
    claude: FakeAnthropicUpstream, turnout: StartTurnout
) -> None:
    clock = ManualClock()
    claude.set_models_status(overloaded())
    provider = {
        "kind": "anthropic",
        "base_url": claude.base_url,
        "api_key": "sk-ant-test",
        "health_check": FAST,
    }
    config = simple_config(
        {},
        providers={"claude": provider},
        models={"c": {"deployments": [{"provider": "claude", "model": "claude-haiku"}]}},
        breaker={"failures": 2, "cooldown": COOLDOWN},
    )
    server = turnout(config, clock)

    def state() -> float:
        return value(scrape(server), "turnout_breaker_state", deployment="claude/claude-haiku")

    wait_for(lambda: state() == 2)
    check = claude.requests[0]
    assert (check.method, check.path) == ("GET", "/v1/models")
    assert check.headers["x-api-key"] == "sk-ant-test"
    assert check.headers["anthropic-version"] == "2023-06-01"

    claude.set_models_status(None)
    # Let a check that was already failing land first: past the cooldown it would take
    # the probe, fail it and restart the cooldown on a clock that no longer moves.
    seen = len(claude.requests)
    wait_for(lambda: len(claude.requests) >= seen + 3)
    clock.advance(COOLDOWN)
    wait_for(lambda: state() == 0)
    with server.client() as client:
        completion = client.chat.completions.create(model="c", messages=MESSAGES)
    assert completion.choices[0].message.content == "Hello from Claude"
    assert [r.path for r in claude.requests if r.method == "POST"] == ["/v1/messages"]


@pytest.mark.parametrize(
    "health_check",
    [{"interval": 0}, {"interval": -1}, {"timeout": 0}, {"path": "models"}, {"every": 5}],
)
def test_health_check_settings_are_validated(health_check: dict[str, Any]) -> None:
    config = simple_config({"a": "http://127.0.0.1:9/v1"})
    config["providers"]["a"]["health_check"] = health_check
    with pytest.raises(pydantic.ValidationError, match="health_check"):
        TurnoutConfig.model_validate(config)


def test_health_check_defaults() -> None:
    config = simple_config({"a": "http://127.0.0.1:9/v1"})
    config["providers"]["a"]["health_check"] = {}
    check = TurnoutConfig.model_validate(config).providers["a"].health_check
    assert check is not None
    assert (check.interval, check.timeout, check.path) == (15.0, 5.0, None)
