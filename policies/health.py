"""Deployment health: circuit breakers, latency and in-flight statistics, kept in the
shared state store so that every replica sees the same breakers.

A failure, for a breaker, is the deployment's fault: a connection error, a timeout, a
broken stream, a 5xx or a 429, an auth or not-found error from the backend. A 400 about
the request, a content-policy refusal or a context-window overflow are not failures: they
are answers from a deployment that works, and count as such. A call cancelled by the
client (or by the request's deadline) is not counted at all, nor is one that Turnout's own
side could not make (`Failure.OWN_LIMIT`: a provider closed or failed to start, a limit of
this process); if it was the half-open probe, the probe is given back. What Turnout waits
for instead of failing (a loading model, a full connection pool) never reaches here.

Outcomes say whether they are the probe's (`probe`, as `acquire` granted it): while a
breaker is half-open only the probe's outcome moves it, so a late success from a call sent
before it opened cannot close it."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from policies.config import TurnoutConfig
from policies.deferred import Deferred
from policies.plan import Target
from policies.policy_config import BreakerSettings
from policies.retry import Decision, classify
from policies.state.base import BreakerPolicy, BreakerView, StateStore
from providers.errors import Failure, UpstreamError

Clock = Callable[[], float]
OnBreaker = Callable[[str, str], None]  # (deployment label, state) for metrics
LATENCY_ALPHA = 0.3


def breaker_policy(settings: BreakerSettings) -> BreakerPolicy:
    return BreakerPolicy(
        failures=settings.failures,
        cooldown_s=settings.cooldown,
        failure_rate=settings.failure_rate,
        window_s=settings.window,
        min_calls=settings.min_calls,
    )


def counts_as_failure(error: UpstreamError) -> bool:
    if error.failure is Failure.OWN_LIMIT:
        return False
    return classify(error) in (Decision.RETRY, Decision.NEXT)


class Health:
    def __init__(
        self,
        store: StateStore,
        config: TurnoutConfig,
        clock: Clock,
        on_breaker: OnBreaker | None = None,
        deferred: Deferred | None = None,
    ) -> None:
        """`deferred`: where the writes that need not hold up a response go (calls
        counted in and out of flight, successes, every outcome kept for the status page
        with `StateStore.record_call`); none: done at once."""
        self._store = store
        self._clock = clock
        self._deferred = deferred or Deferred(immediate=True)
        self._on_breaker = on_breaker
        default = breaker_policy(config.breaker)
        self._policies = {
            name: breaker_policy(route.breaker) if route.breaker is not None else default
            for name, route in config.models.items()
        }
        self._default = default

    @property
    def store(self) -> StateStore:
        return self._store

    def policy(self, target: Target) -> BreakerPolicy:
        return self._policies.get(target.model_name, self._default)

    async def acquire(self, target: Target) -> BreakerView:
        view = await self._store.breaker_acquire(target.label, self.policy(target), self._clock())
        self._report(target, view)
        return view

    async def succeeded(
        self,
        target: Target,
        seconds: float | None = None,
        *,
        probe: bool = False,
        first_token_s: float | None = None,
    ) -> None:
        """Record a successful call taking `seconds`; None (a health check, whose speed
        says nothing about serving) leaves the latency statistics alone. `first_token_s`:
        a stream's time to its first content, for the status page."""
        work = self._record_success(target, seconds, probe, first_token_s)
        await self._deferred.run(work)

    async def _record_success(
        self, target: Target, seconds: float | None, probe: bool, first_token_s: float | None
    ) -> None:
        now = self._clock()
        view = await self._store.breaker_record(
            target.label, self.policy(target), True, now, probe=probe
        )
        self._report(target, view)
        if seconds is not None:
            await self._store.observe_latency(target.label, seconds, LATENCY_ALPHA)
        await self._store.record_call(target.label, now, True, seconds, first_token_s)

    async def failed(
        self, target: Target, error: UpstreamError, *, probe: bool = False
    ) -> BreakerView | None:
        """Record a failed call; the breaker after it, or None when the error was not the
        deployment's fault. Such an error is still an answer from a deployment that works
        and is recorded as one: a probe that gets it closes the breaker rather than
        holding the half-open slot until `probe_timeout_s`. An own-limit error is no
        answer at all: nothing is recorded, and a probe is given back."""
        if error.failure is Failure.OWN_LIMIT:  # says nothing about the deployment
            if probe:
                await self.release_probe(target)
            return None
        policy, now = self.policy(target), self._clock()
        kept = self._store.record_call(target.label, now, not counts_as_failure(error), None)
        await self._deferred.run(kept)  # for the status page, off the request's path
        if not counts_as_failure(error):
            view = await self._store.breaker_record(target.label, policy, True, now, probe=probe)
            self._report(target, view)
            return None
        view = await self._store.breaker_record(
            target.label, policy, False, now, error.retry_after, probe=probe
        )
        self._report(target, view)
        return view

    async def release_probe(self, target: Target) -> None:
        """Give back the probe `acquire` granted for a call that will report no outcome
        (cancelled, or never made): the next request may probe at once, rather than after
        `probe_timeout_s`."""
        await self._deferred.run(self._store.breaker_release(target.label, self._clock()))

    async def views(self, targets: Sequence[Target]) -> dict[str, BreakerView]:
        result: dict[str, BreakerView] = {}
        now = self._clock()
        for target in targets:  # few deployments; grouped per policy would be premature
            got = await self._store.breaker_views([target.label], self.policy(target), now)
            result.update(got)
        return result

    async def started(self, target: Target) -> None:
        await self._deferred.run(self._store.add_in_flight(target.label, 1))

    async def ended(self, target: Target) -> None:
        await self._deferred.run(self._store.add_in_flight(target.label, -1))

    def now(self) -> float:
        return self._clock()

    def _report(self, target: Target, view: BreakerView) -> None:
        if self._on_breaker is not None:
            self._on_breaker(target.label, view.state.value)
