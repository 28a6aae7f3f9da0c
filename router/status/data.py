"""What the status page shows, as the JSON `GET /status.json` serves: `snapshot(...)`.

Every figure comes from where routing keeps it, so with a shared store (Redis) every
replica shows the same breakers, calls in flight, limit usage and recent calls:

- breakers (`Health.views`), calls in flight (`StateStore.in_flight`), the EWMA latency
  and first-token estimates routing ranks by (`StateStore.latencies`, `FirstTokenStats`),
  limit usage (`StateStore.peek`, read without charging, as explain reads it) and
  concurrency slots held (`StateStore.slots_held`): the shared store;
- success rate, p50/p95 latency and time to first token, and the chart's series: computed
  (policies/recent_calls.py) from each deployment's last calls as the store keeps them
  (`StateStore.recent_calls`, every replica's); unknown (None) while it does not answer;
- a local sampler's queue and slots: the provider in this process (a sampler host's
  `load()` where several workers share one);
- reloads: this process's reloader; batches: the batch storage (shared where it is).

Only configured names, numbers and states: nothing a client wrote (no prompts, no
client-chosen model names, no batch metadata), and never a key, only its configured name
or its id (the first 12 hex digits of its digest)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import structlog

from policies.config import Deployment
from policies.hedge import P95_DEVIATIONS
from policies.plan import Target
from policies.recent_calls import Point, Recent
from policies.redis_client import RedisAddress
from policies.state.base import (
    BreakerState,
    BreakerView,
    CallSample,
    StateUnavailable,
)
from policies.state.factory import display_url
from policies.storage.factory import Storage
from providers.base import Provider
from providers.local.provider import LocalGenerator
from router.gateway import Gateway
from router.status.limits import limits_sections, model_limits
from router.status.reloads import ReloadLog

log = structlog.get_logger("turnout.status")

PING_TIMEOUT_S = 0.5  # the page must answer even while the store does not
MAX_BATCHES = 50  # the oldest in progress; a page of every batch would not be "at a glance"
_FIRST_TOKEN = ("#ttft", "#ttft-dev")  # FirstTokenStats' keys (policies/hedge.py)


async def snapshot(
    gateway: Gateway,
    *,
    storage: Storage | None = None,
    reloads: ReloadLog | None = None,
) -> dict[str, Any]:
    """The whole status: `storage` (the app's batch storage) and `reloads` (its reloader's
    log) where the app has them."""
    now = gateway.clock()
    config = gateway.config
    # The store first: while it does not answer, routing fails open (every breaker reads
    # closed, nothing in flight), and the page says "unknown" rather than repeat that.
    store = await state_store(gateway)
    models, teams, batches = await asyncio.gather(
        _models(gateway, now, reachable=store["healthy"]),
        limits_sections(gateway, now, reachable=store["healthy"]),
        _batches(gateway, storage),
    )
    return {
        "object": "turnout.status",
        "generated_at": now,
        "open_access": gateway.open_access,
        "ready": gateway.ready,
        "recent_window_s": gateway.recent.window_s,
        "history_step_s": gateway.recent.bucket_s,
        "models": models,
        "teams": teams["teams"],
        "keys": teams["keys"],
        "reloads": [e.as_json() for e in reloads.newest_first()] if reloads is not None else [],
        "state_store": store,
        "batches": batches,
        "config": {"models": len(config.models), "providers": len(config.providers)},
    }


# --- models and deployments ----------------------------------------------------------------
async def _models(gateway: Gateway, now: float, *, reachable: bool) -> list[dict[str, Any]]:
    config = gateway.config
    targets = [Target(name, d) for name, route in config.models.items() for d in route.deployments]
    labels = sorted({t.label for t in targets})
    views, in_flight, ewma = await _shared_figures(gateway, targets, labels, reachable)
    calls = await _recent_calls(gateway, labels, now, reachable)
    limit_states = await model_limits(gateway, now, reachable)
    models = []
    for name, route in config.models.items():
        deployments = [
            _deployment(gateway, Target(name, d), views, in_flight, ewma, calls, now)
            for d in route.deployments
        ]
        models.append(
            {
                "name": name,
                "strategy": route.strategy.value,
                "fallbacks": list(route.fallbacks),
                "deployments": deployments,
                "limits": limit_states.get(name, []),
            }
        )
    return models


async def _shared_figures(
    gateway: Gateway, targets: Sequence[Target], labels: Sequence[str], reachable: bool
) -> tuple[dict[str, BreakerView | None], dict[str, int | None], dict[str, float]]:
    """Breakers, calls in flight and EWMA latencies (routing's and first-token) from the
    store; an unreachable store leaves them unknown (None) rather than failing the page."""
    views: dict[str, BreakerView | None] = dict.fromkeys(labels)
    in_flight: dict[str, int | None] = dict.fromkeys(labels)
    ewma: dict[str, float] = {}
    store = gateway.store
    if not reachable:
        return views, in_flight, ewma
    try:
        views.update(await gateway.health.views(_unique_by_label(targets)))
        in_flight.update(await store.in_flight(labels))
        keys = [*labels, *(f"{label}{suffix}" for label in labels for suffix in _FIRST_TOKEN)]
        ewma.update(await store.latencies(keys))
    except StateUnavailable as exc:
        log.warning("status_state_unavailable", error=gateway.redactor.for_log(str(exc)))
    return views, in_flight, ewma


async def _recent_calls(
    gateway: Gateway, labels: Sequence[str], now: float, reachable: bool
) -> dict[str, Sequence[CallSample]] | None:
    """Every deployment's last calls as the store keeps them (every replica's); None while
    the store does not answer (the page shows the figures unknown)."""
    if not reachable:
        return None
    try:
        found = await gateway.store.recent_calls(labels, gateway.recent.since(now))
    except StateUnavailable as exc:
        log.warning("status_state_unavailable", error=gateway.redactor.for_log(str(exc)))
        return None
    return dict(found)


def _unique_by_label(targets: Sequence[Target]) -> list[Target]:
    """One target per deployment: the first model naming it sets its breaker policy."""
    seen: dict[str, Target] = {}
    for target in targets:
        seen.setdefault(target.label, target)
    return list(seen.values())


def _deployment(
    gateway: Gateway,
    target: Target,
    views: dict[str, BreakerView | None],
    in_flight: dict[str, int | None],
    ewma: dict[str, float],
    calls: dict[str, Sequence[CallSample]] | None,
    now: float,
) -> dict[str, Any]:
    deployment: Deployment = target.deployment
    label = target.label
    provider = gateway.providers.get(deployment.provider)
    settings = gateway.config.providers[deployment.provider]
    samples = calls.get(label, ()) if calls is not None else None
    recent: Recent | None = None
    history: list[dict[str, Any]] | None = None
    if samples is not None:
        recent = gateway.recent.recent(samples, now)
        history = [_point(p) for p in gateway.recent.series(samples, now)]
    ttft_mean = ewma.get(f"{label}#ttft")
    ttft_dev = ewma.get(f"{label}#ttft-dev")
    return {
        "label": label,
        "provider": deployment.provider,
        "kind": settings.kind,
        "breaker": _breaker(views.get(label), now),
        "success_rate": recent.success_rate if recent is not None else None,
        "calls": recent.calls if recent is not None else None,
        "latency_ms": {
            "p50": _ms(recent.latency_p50_s if recent is not None else None),
            "p95": _ms(recent.latency_p95_s if recent is not None else None),
            "ewma": _ms(ewma.get(label)),
        },
        "ttft_ms": {
            "p50": _ms(recent.ttft_p50_s if recent is not None else None),
            "p95": _ms(recent.ttft_p95_s if recent is not None else None),
            "ewma": _ms(ttft_mean),
            # FirstTokenStats' estimate, as hedging uses it: mean + 2 deviations.
            "p95_estimate": _ms(_ttft_p95(ttft_mean, ttft_dev)),
        },
        "in_flight": in_flight.get(label),
        "queue": _queue(provider),
        "backend_load": _backend_load(provider),
        "history": history,
    }


def _breaker(view: BreakerView | None, now: float) -> dict[str, Any]:
    if view is None:
        return {"state": None, "open_for_s": None, "consecutive_failures": None}
    open_for = None
    if view.state is BreakerState.OPEN:
        open_for = round(max(0.0, view.open_until - now), 3)
    return {
        "state": view.state.value,
        "open_for_s": open_for,
        "consecutive_failures": view.consecutive_failures,
    }


def _ttft_p95(mean: float | None, deviation: float | None) -> float | None:
    if mean is None:
        return None
    return mean + P95_DEVIATIONS * (deviation if deviation is not None else mean / 2)


def _queue(provider: Provider | None) -> dict[str, Any] | None:
    """A local sampler's queue: jobs waiting for a slot, and slots decoding of those there
    are. A sampler served by a sampler host (several workers) tells only its total load."""
    if isinstance(provider, LocalGenerator):
        engine = provider.engine
        if engine is None:  # not loaded yet
            return {"depth": None, "slots_in_use": None, "slots": None}
        return {
            "depth": engine.queue_depth,
            "slots_in_use": engine.in_flight,
            "slots": engine.slots,
        }
    load = provider.load() if provider is not None else None
    if load is None:
        return None
    return {"depth": None, "slots_in_use": None, "slots": None, "load": load}


def _backend_load(provider: Provider | None) -> dict[str, Any] | None:
    """What an engine behind an HTTP API reports of itself (`load_metrics:`), if it does."""
    report = provider.load_report(stale=True) if provider is not None else None
    if report is None:
        return None
    return {
        "waiting": report.waiting,
        "running": report.running,
        "kv_cache_usage": report.kv_cache_usage,
        "age_s": round(report.age, 3),
        "fresh": report.fresh,
    }


def _point(point: Point) -> dict[str, Any]:
    return {
        "t": point.start,
        "calls": point.calls,
        "failures": point.failures,
        "p50_ms": _ms(point.p50_latency_s),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


async def state_store(gateway: Gateway) -> dict[str, Any]:
    """Which store, and whether it answers a ping within `PING_TIMEOUT_S` now. The address
    is shown without user, password or query; an error has the config's secrets masked."""
    settings = gateway.config.state
    address = RedisAddress.of(settings)
    kind = "memory" if address is None else "cluster" if address.cluster else "redis"
    error: str | None = None
    try:
        await asyncio.wait_for(gateway.store.ping(), PING_TIMEOUT_S)
    except TimeoutError:
        error = f"no answer within {PING_TIMEOUT_S} s"
    except Exception as exc:  # whatever the client raised: the page reports it
        error = gateway.redactor.for_client(str(exc), display_url(settings)) or type(exc).__name__
    return {"kind": kind, "where": display_url(settings), "healthy": error is None, "error": error}


async def _batches(gateway: Gateway, storage: Storage | None) -> list[dict[str, Any]]:
    """Batches in progress, oldest first: their status and line counts (the stored counts,
    which every runner updates as it records lines). The creator is named by its key's
    configured name or id; nothing the client wrote (metadata, model) is shown."""
    if storage is None:
        return []
    try:
        ids = await storage.meta.active_batches()
        records = await asyncio.gather(*(storage.meta.get_batch(i) for i in ids[:MAX_BATCHES]))
        counts = await asyncio.gather(
            *(storage.meta.line_counts(r.id) for r in records if r is not None)
        )
    except Exception as exc:  # the page still answers; the log says why batches are missing
        log.warning("status_batches_unavailable", error=gateway.redactor.for_log(str(exc)))
        return []
    found = []
    for record, (completed, failed) in zip(
        [r for r in records if r is not None], counts, strict=True
    ):
        caller = gateway.keys.by_key_id(record.key_id)
        found.append(
            {
                "id": record.id,
                "status": record.status,
                "endpoint": record.endpoint,
                "created_at": record.created_at,
                "in_progress_at": record.in_progress_at,
                "owner": (caller.name or caller.key_id) if caller is not None else record.key_id,
                "total": record.total,
                "completed": completed,
                "failed": failed,
            }
        )
    return found
