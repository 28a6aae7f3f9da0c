"""Explain a routing decision without making it: for one request, the matched team and
rule, and each deployment in the order it would be tried with why it is eligible or not
(excluded by policy, breaker open, a capability missing) and what would be emulated,
dropped or clamped; plus where the caller stands against its limits. No backend is called
and nothing is counted."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from policies.affinity.explained import explained
from policies.dispatch import Dispatcher
from policies.health import Health
from policies.limits import Limiter
from policies.plan import Target
from policies.routing import Route
from policies.state.base import BreakerState, Limit, LimitKind, LimitState, StateUnavailable
from policies.teams import Caller
from policies.translation import Refusal
from providers.types import Endpoint


async def explain(
    *,
    caller: Caller,
    asker: Caller | None = None,
    route: Route,
    endpoint: Endpoint,
    body: Mapping[str, Any],
    dispatcher: Dispatcher,
    health: Health,
    limiter: Limiter,
) -> dict[str, Any]:
    """`caller`: whom the request is routed as; `asker`: who asks (default: `caller`)."""
    plan = route.plan
    orderer = dispatcher.orderer
    affinity: dict[str, Any] | None = None
    if orderer is not None and plan.affinity is not None:  # decided, nothing recorded
        decision = await orderer.decide(plan.targets, plan.affinity)
        affinity = explained(plan.affinity, decision)
        rank = {label: i for i, label in enumerate(decision.choice.order)}
        targets: Sequence[Target] = sorted(plan.targets, key=lambda t: rank.get(t.label, len(rank)))
    elif orderer is not None:
        targets = await orderer.order(plan.targets, plan.strategy)
    else:
        targets = plan.targets
    views = await health.views([*targets, *plan.context_window_targets])
    deployments = [
        _deployment(t, dispatcher.assess(plan, endpoint, body, t), views[t.label]) for t in targets
    ]
    # Deployments outside a team's models are named only to an admin asking.
    deployments += [
        {"deployment": label, "eligible": False, "reason": f"excluded: {why}"}
        for label, why in route.excluded_for(asker or caller)
    ]
    overflow = [
        _deployment(t, dispatcher.assess(plan, endpoint, body, t), views[t.label])
        for t in plan.context_window_targets
    ]
    return {
        "object": "router.explanation",
        "endpoint": endpoint.value,
        "caller": {"key": caller.key_id, "team": caller.team, "admin": caller.admin},
        "rule": route.rule,
        "model": plan.model,
        "model_match": _model_match(route),
        "strategy": plan.strategy.value,
        "translation": plan.mode.value,
        "order_note": _order_note(plan.strategy.value),
        "affinity": affinity,
        "deployments": deployments,
        "context_window_fallbacks": overflow,
        "limits": await _limits(caller, limiter, health),
        "would_serve": next((d["deployment"] for d in deployments if d["eligible"]), None),
    }


def _model_match(route: Route) -> dict[str, Any]:
    """Which configured entry the request's model name met, and how (policies/model_names.py);
    `configured` is null where none did and a rule sent the request on."""
    resolved = route.resolved
    return {
        "asked": route.asked,
        "configured": resolved.configured if resolved is not None else None,
        "matched_by": resolved.how if resolved is not None else None,
    }


def _deployment(target: Target, fit: Any, view: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "deployment": target.label,
        "via_model": target.model_name,
        "breaker": view.state.value,
    }
    if isinstance(fit, Refusal):
        entry.update(eligible=False, reason=f"missing capability: `{fit.param}`: {fit.message}")
        return entry
    if not view.allowed:
        state = "open" if view.state is BreakerState.OPEN else "half-open, probe out"
        entry.update(eligible=False, reason=f"breaker {state}")
        return entry
    entry.update(
        eligible=True,
        reason="eligible",
        emulated=list(fit.emulated),
        dropped=list(fit.dropped),
        clamped=list(fit.clamped),
    )
    return entry


async def _limits(caller: Caller, limiter: Limiter, health: Health) -> list[dict[str, Any]]:
    now = health.now()
    limits = [limit for limit, _ in limiter.limits_for(caller, now)]
    try:
        states: Sequence[LimitState | None] = await health.store.peek(limits, now)
    except StateUnavailable:  # the limits still apply; where the caller stands is unknown
        states = [None] * len(limits)
    return [_limit(caller, limit, state) for limit, state in zip(limits, states, strict=True)]


def _limit(caller: Caller, limit: Limit, state: LimitState | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        # The key's own scope without its id; a team's scope keeps the team's name.
        "limit": limit.key.replace(f":key:{caller.key_id}", ":key"),
        "kind": "budget" if limit.kind is LimitKind.BUDGET else "rate",
        "capacity": limit.capacity,
    }
    if state is None:
        return entry | {"remaining": None, "reset_s": None, "over": None, "state": "unavailable"}
    return entry | {
        "remaining": max(0, state.remaining),
        "reset_s": round(state.reset_s, 3),
        "over": state.remaining <= 0,
    }


def _order_note(strategy: str) -> str | None:
    if strategy in ("weighted", "least-latency"):
        return f"`{strategy}` draws at random: this is one order it could choose"
    return None
