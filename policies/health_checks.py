"""Active health checks: for each provider whose config has `health_check`, a loop that calls
`Provider.check` every `interval` seconds (±10 %, so replicas and providers drift apart) under
`timeout`, and tells the outcome to the breaker of each of that provider's deployments. A
backend that goes down is then skipped before a client finds out, even with no traffic, and
one that comes back is probed by a check rather than by a client's request.

How one check's outcome meets one deployment's breaker (acquired first, as a call would be):

- closed: a failed check is recorded as a failed call, so `failures` failed checks in a row
  (or the failure rate) open the breaker. A successful check is recorded only when the
  provider's previous check failed (or this checker had none yet: a reload's new gateway),
  to clear what failed checks added; otherwise it changes nothing, so a model list that
  answers never hides completions that fail.
- open past its cooldown (or half-open with a stale probe): the check takes the probe, and
  its outcome is the probe's. Success closes the breaker, so traffic returns without a
  client risking a request; failure re-opens it with the cooldown restarted, so no client
  probes a backend that is still down.
- open within its cooldown, or half-open with a client's probe out: nothing changes.

`interval` and `timeout` are seconds on the event loop's clock; breakers read the gateway's
wall clock, as they do for calls.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import structlog

from policies.config import TurnoutConfig
from policies.health import Health
from policies.plan import Target
from policies.redaction import Redactor
from policies.state.base import BreakerState
from providers.base import Provider
from providers.errors import UpstreamError
from providers.http_settings import HealthCheckSettings

log = structlog.get_logger("turnout.health_checks")

JITTER = 0.1  # each wait is `interval` times a uniform draw in [1 - JITTER, 1 + JITTER]


@dataclass(frozen=True, slots=True)
class CheckedProvider:
    """A provider to check, how, and the deployments (one per breaker) it answers for."""

    provider: Provider
    settings: HealthCheckSettings
    targets: tuple[Target, ...]


def checked_providers(
    config: TurnoutConfig, providers: Mapping[str, Provider]
) -> list[CheckedProvider]:
    """Every provider whose settings have a `health_check` (any kind that declares one)."""
    checked = []
    for name, settings in config.providers.items():
        check = getattr(settings, "health_check", None)
        if isinstance(check, HealthCheckSettings):
            checked.append(CheckedProvider(providers[name], check, _targets_of(config, name)))
    return checked


def _targets_of(config: TurnoutConfig, provider: str) -> tuple[Target, ...]:
    """One target per deployment label (breakers are kept per label), through the first
    model that lists it, whose breaker policy then applies."""
    targets: dict[str, Target] = {}
    for model, route in config.models.items():
        for deployment in route.deployments:
            if deployment.provider == provider:
                targets.setdefault(deployment.label, Target(model, deployment))
    return tuple(targets.values())


async def run_check(provider: Provider, limit_s: float) -> UpstreamError | None:
    """One check, given `limit_s` seconds: None when healthy, else why not."""
    try:
        async with asyncio.timeout(limit_s):
            await provider.check()
    except TimeoutError:
        return UpstreamError.timeout(f"{provider.name}: health check took over {limit_s:g}s")
    except UpstreamError as exc:
        return exc
    return None


class HealthChecker:
    """The check loops of one gateway: started once its providers have started, stopped
    when it closes or a reload retires it."""

    def __init__(
        self,
        checked: Iterable[CheckedProvider],
        health: Health,
        rng: random.Random | None = None,
        redactor: Redactor | None = None,
    ) -> None:
        """`redactor`: masks what a failed check logs (the upstream's code or message can
        echo the key the check was sent with)."""
        self._checked = tuple(checked)
        self._redactor = redactor or Redactor()
        self._health = health
        self._rng = rng or random.Random()
        self._failing: dict[str, bool] = {}  # provider name → did its last check fail?
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def from_config(
        cls,
        config: TurnoutConfig,
        providers: Mapping[str, Provider],
        health: Health,
        redactor: Redactor | None = None,
    ) -> HealthChecker:
        return cls(checked_providers(config, providers), health, redactor=redactor)

    @property
    def running(self) -> bool:
        return any(not task.done() for task in self._tasks)

    def start(self) -> None:
        if self._tasks:
            return
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._loop(c), name=f"health-check:{c.provider.name}")
            for c in self._checked
        ]

    async def aclose(self) -> None:
        """Stop every loop; a check in flight is cancelled with it."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def check_once(self, checked: CheckedProvider) -> UpstreamError | None:
        """Check one provider now and record the outcome (see the module docstring)."""
        error = await run_check(checked.provider, checked.settings.timeout)
        clears = self._note(checked.provider.name, error)
        for target in checked.targets:
            view = await self._health.acquire(target)
            closed = view.state is BreakerState.CLOSED
            if view.probe or (closed and (error is not None or clears)):
                if error is None:
                    await self._health.succeeded(target, probe=view.probe)
                else:
                    await self._health.failed(target, error, probe=view.probe)
        return error

    async def _loop(self, checked: CheckedProvider) -> None:
        interval = checked.settings.interval
        while True:
            await asyncio.sleep(interval * self._rng.uniform(1 - JITTER, 1 + JITTER))
            try:
                await self.check_once(checked)
            except (
                Exception
            ) as exc:  # a bug in a check must not end the loop: no caller to raise to
                log.error("health_check_error", provider=checked.provider.name, exc_info=exc)

    def _note(self, provider: str, error: UpstreamError | None) -> bool:
        """Log a change of health (not every failed check). True when a success here should
        be recorded on a closed breaker: the last check failed, or there was none yet."""
        previous = self._failing.get(provider)  # None before this checker's first check
        if error is not None and not previous:
            said = self._redactor.for_log(error.summary())
            log.warning("health_check_failed", provider=provider, error=said)
        elif error is None and previous:
            log.info("health_check_recovered", provider=provider)
        self._failing[provider] = error is not None
        return previous is not False
