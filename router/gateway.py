"""Everything one running app holds: config, providers, dispatcher, accepted keys.

Built by `create_app` and kept in `app.state`; nothing here is module-global.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import os
import random
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from time import perf_counter, time
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from policies.cache import ResponseCache
from policies.config import TurnoutConfig
from policies.deferred import Deferred
from policies.dispatch import Dispatcher
from policies.health import Health
from policies.health_checks import HealthChecker
from policies.hedge import FirstTokenStats
from policies.limits import Limiter
from policies.plan import Planner, Target
from policies.pricing.book import PriceBook
from policies.pricing.table import shipped_table
from policies.recent_calls import RecentCalls
from policies.redaction import Redactor
from policies.routing import Router
from policies.spend.book import SpendBook
from policies.state.base import StateStore
from policies.state.factory import build_store, display_url
from policies.state.memory import MemoryStore
from policies.strategies import Orderer
from policies.teams import KeyTable
from policies.telemetry.build import build_tracing
from providers.base import Provider
from providers.capabilities import Capabilities
from providers.load_report import LoadReport
from providers.registry import build_provider
from providers.timeouts import UpstreamTimeouts

if TYPE_CHECKING:  # the OpenTelemetry SDK is imported only once tracing is on
    from policies.telemetry.tracing import Tracing

log = structlog.get_logger("turnout.gateway")


class PolicyObserver(Protocol):
    """What the policy layer reports for metrics (router/metrics.Metrics implements it)."""

    def breaker_state(self, deployment: str, state: str) -> None: ...

    def limit_rejected(self, scope: str, limit: str) -> None: ...

    def cache(self, result: str) -> None: ...

    def state_error(self, operation: str) -> None: ...

    def trace_spans_dropped(self, count: int) -> None: ...


@dataclass(slots=True)
class Gateway:
    config: TurnoutConfig
    providers: dict[str, Provider]
    dispatcher: Dispatcher
    planner: Planner
    keys: KeyTable
    router: Router
    limiter: Limiter
    health: Health
    store: StateStore
    cache: ResponseCache | None = None
    health_checks: HealthChecker | None = None  # started once ready, stopped when closed or retired
    created: int = field(default_factory=lambda: int(time()))
    ready: bool = False
    startup_error: str | None = None  # for admins and the log: may name internal addresses
    not_ready: list[str] = field(default_factory=list)  # what failed to start, by name only
    _startup: asyncio.Task[None] | None = None
    deferred: Deferred = field(default_factory=lambda: Deferred(immediate=True))
    clock: Callable[[], float] = time  # wall clock for breakers and limits; reloads keep it
    reused: frozenset[str] = frozenset()  # providers taken, already started, from `previous`
    # Several workers: the socket of the sampler host serving their in-process providers.
    sampler_host: str | None = None
    redactor: Redactor = field(default_factory=Redactor)  # masks errors and logs
    tracing: Tracing | None = None  # OpenTelemetry traces (policies/telemetry/); None: off
    prices: PriceBook = field(default_factory=lambda: PriceBook({}))  # what requests cost
    # What requests cost, per team, key, model and day: one book for the app's life (a
    # reload's gateway takes its predecessor's), flushed by the app's lifespan.
    spend: SpendBook = field(default_factory=SpendBook)
    # How the status page summarises each deployment's last calls (kept in the store).
    recent: RecentCalls = field(default_factory=RecentCalls)
    _in_flight: int = 0
    _drained: asyncio.Event | None = None
    _id_prefix: str = field(default_factory=lambda: secrets.token_hex(6))
    _id_counter: Iterator[int] = field(default_factory=itertools.count)

    def new_request_id(self) -> str:
        """Unique across processes (random prefix per app) without a syscall per request."""
        return f"req_{self._id_prefix}{next(self._id_counter):010x}"

    @classmethod
    def from_config(
        cls,
        config: TurnoutConfig,
        previous: Gateway | None = None,
        *,
        clock: Callable[[], float] | None = None,
        observer: PolicyObserver | None = None,
        sampler_host: str | None = None,
    ) -> Gateway:
        """`previous`: the running gateway a reload replaces; its unchanged providers are
        reused rather than built (and loaded) again. `sampler_host`: see
        `providers.registry.build_provider` (a reload keeps `previous`'s)."""
        if previous is not None:
            sampler_host = previous.sampler_host
        providers, reused = build_providers(config, previous, sampler_host)
        if previous is not None and previous.config.state == config.state:
            store, deferred = previous.store, previous.deferred
        else:
            store = build_store(config.state, observer.state_error if observer else None)
            deferred = Deferred(immediate=isinstance(store, MemoryStore))
        clock = clock or (previous.clock if previous is not None else time)
        health = Health(
            store, config, clock, observer.breaker_state if observer else None, deferred
        )

        def load_of(target: Target) -> int | None:
            return providers[target.deployment.provider].load()

        def report_of(target: Target) -> LoadReport | None:  # a backend's own figures
            return providers[target.deployment.provider].load_report()

        prices = PriceBook.from_config(config, shipped_table())
        orderer = Orderer(
            store,
            random.Random(),
            load_of,
            report_of,
            lambda t: prices.price(t.label),
            # A backend that says what its prefix cache holds (the in-process samplers).
            lambda t: providers[t.deployment.provider].cached_prompt_tokens,
        )
        redactor = Redactor.from_config(config)
        dispatcher = Dispatcher(
            providers,
            deployment_capabilities(config, providers),
            health,
            orderer,
            redactor,
            max_parallel=config.emulation.max_parallel,
            max_calls=config.emulation.max_calls,
            first_tokens=FirstTokenStats(store, deferred),
        )
        planner = Planner(config)
        tracing = build_tracing(
            config.telemetry,
            os.environ,
            previous.tracing if previous is not None else None,
            observer.trace_spans_dropped if observer else None,
        )
        cache = ResponseCache(store, config.cache) if config.cache is not None else None
        return cls(
            config,
            providers,
            dispatcher,
            planner,
            KeyTable(config),
            Router(config, planner),
            Limiter(
                store,
                clock,
                deferred,
                refuse_when_unavailable=config.state.limits_when_unavailable == "refuse",
                slot_lease_s=_slot_lease(config),
            ),
            health,
            store,
            cache,
            HealthChecker.from_config(config, providers, health, redactor),
            reused=reused,
            sampler_host=sampler_host,
            redactor=redactor,
            tracing=tracing,
            deferred=deferred,
            clock=clock,
            prices=prices,
            spend=previous.spend if previous is not None else SpendBook(clock),
        )

    @property
    def open_access(self) -> bool:
        return self.keys.open_access

    def begin_start(self) -> asyncio.Task[None]:
        """Start every provider in the background: the server answers /health/live at once
        and /health/ready once all have started (local models can take a while to load)."""
        self._startup = asyncio.get_running_loop().create_task(self._start_all())
        return self._startup

    async def _start_all(self) -> None:
        # One at a time: loading two local models at once races inside transformers' lazy
        # imports ("cannot import name 'AutoModel'"), and they would share the same cores.
        # A store unreachable at start-up fails readiness (most likely a wrong URL); an
        # outage after start is met by failing open (policies/state/fail_open.py).
        failed: list[BaseException] = []
        try:
            await self.store.ping()
        except Exception as exc:
            log.error("state_store_unreachable", error=str(exc))
            where = display_url(self.config.state)
            failed.append(RuntimeError(f"state store ({where}): {exc}"))
            self.not_ready.append("state store")
        for name, provider in self.providers.items():
            if name in self.reused:
                continue
            try:
                await self._start_one(name, provider)
            except Exception as exc:
                failed.append(exc)
                self.not_ready.append(f"provider {name}")
        if failed:
            self.startup_error = "; ".join(str(r) for r in failed)
            return
        _freeze_startup_heap()
        self.ready = True
        if self.health_checks is not None:
            self.health_checks.start()
        log.info("gateway_ready", providers=len(self.providers), models=len(self.config.models))
        if unpriced := self.prices.unpriced():  # their requests' cost is reported unknown
            log.info("deployments_unpriced", deployments=unpriced)

    async def _start_one(self, name: str, provider: Provider) -> None:
        started = perf_counter()
        log.info("provider_starting", provider=name)
        try:
            await provider.start()
        except Exception as exc:
            log.error("provider_start_failed", provider=name, error=str(exc), exc_info=exc)
            raise RuntimeError(f"provider {name}: {exc}") from exc
        log.info("provider_started", provider=name, seconds=round(perf_counter() - started, 2))

    def enter(self) -> None:
        """A request starts on this gateway (see `RequestRecord.begin`)."""
        self._in_flight += 1

    def leave(self) -> None:
        self._in_flight -= 1
        if not self._in_flight and self._drained is not None:
            self._drained.set()

    async def drained(self) -> None:
        """Return once no request is in flight here; a replaced gateway gets no new ones."""
        while self._in_flight:
            self._drained = asyncio.Event()
            await self._drained.wait()

    async def stop_health_checks(self) -> None:
        """This gateway no longer checks its providers (a reload's replacement does)."""
        if self.health_checks is not None:
            await self.health_checks.aclose()

    async def aclose(self) -> None:
        self.ready = False
        if self._startup is not None and not self._startup.done():
            self._startup.cancel()
            await asyncio.gather(self._startup, return_exceptions=True)
        await self.stop_health_checks()
        await asyncio.gather(*(p.aclose() for p in self.providers.values()))
        await self.close_store()
        await self.close_tracing()

    async def close_tracing(self) -> None:
        """Export the spans still queued and stop the exporter's thread."""
        if self.tracing is not None:
            await self.tracing.aclose()

    async def close_store(self) -> None:
        """Finish the deferred writes, then close the shared-state store."""
        await self.deferred.drain()
        await self.store.aclose()


def _slot_lease(config: TurnoutConfig) -> float:
    """How long a concurrency slot is leased: past the longest a request can last (its
    body, its deadline, a last stalled write, and a minute to spare), so only a slot whose
    replica died ever runs out."""
    server = config.server
    return server.body_timeout + config.longest_total + server.send_timeout + 60.0


def _freeze_startup_heap() -> None:
    """Move everything alive after start-up (modules, config, clients, models) out of the
    cyclic GC's reach. Without this, each full collection walks that whole heap: measured
    at 21 full collections of up to 64 ms in 8 s of load, which set the p99 latency."""
    gc.collect()
    gc.freeze()


def build_providers(
    config: TurnoutConfig, previous: Gateway | None, sampler_host: str | None = None
) -> tuple[dict[str, Provider], frozenset[str]]:
    """Every configured provider, and the names of those taken from `previous` because
    nothing they are built from changed (settings compare by value). Only a ready
    gateway's providers are taken: they are known to have started."""
    old = previous if previous is not None and previous.ready else None
    same_timeouts = old is not None and _built_with(old.config) == _built_with(config)
    providers: dict[str, Provider] = {}
    reused: set[str] = set()
    for name, settings in config.providers.items():
        if old is not None and same_timeouts and old.config.providers.get(name) == settings:
            providers[name] = old.providers[name]
            reused.add(name)
        else:
            providers[name] = build_provider(name, settings, config.timeouts, sampler_host)
    return providers, frozenset(reused)


def _built_with(config: TurnoutConfig) -> dict[str, Any]:
    """The timeouts a provider is built with (the total deadline is the dispatcher's)."""
    return config.timeouts.model_dump(include=set(UpstreamTimeouts.model_fields))


def deployment_capabilities(
    config: TurnoutConfig, providers: dict[str, Provider]
) -> dict[str, Capabilities]:
    """Each deployment's native capabilities: its adapter's declaration, then the provider's
    `capabilities:` overrides, then the deployment's own."""
    result: dict[str, Capabilities] = {}
    for route in config.models.values():
        for deployment in route.deployments:
            settings = config.providers[deployment.provider]
            result[deployment.label] = (
                providers[deployment.provider]
                .capabilities.with_overrides(settings.capabilities)
                .with_overrides(deployment.capabilities)
            )
    return result
