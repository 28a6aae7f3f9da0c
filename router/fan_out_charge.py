"""Admission for a request's tokens when a deployment's emulation makes several upstream
calls: every call is charged before the first starts (policies/fan_out_cost.py says how
many read the prompt), and a fallback deployment that would make more calls reserves the
difference before it starts, or the request is refused with the 429; a hedge reserves
for its calls on top of those of the calls still running beside it. Dollar budgets
(the key's, the team's, the routed model's) are reserved and topped up alongside, at the
estimated cost of the same calls (policies/pricing/estimate.py).

A model's budgets count the requests routed to it, whichever deployment answers (its
configured fallbacks' included). They also count, whole, a request routed elsewhere that
the request itself steered to the model: fallbacks it added (`fallbacks`,
`router.fallbacks`), or narrowing (`router.only`/`ignore`) that left none of its routed
model's own deployments, so that what it is served by is its fallbacks by construction.
Without that, asking for a cheap model with `fallbacks: [gpt]` and `router: {ignore:
[<the cheap deployment>]}` was served by gpt outside gpt's budget."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from policies.config import TurnoutConfig
from policies.fan_out_cost import UpstreamCalls
from policies.limit_responses import rate_limit_headers
from policies.limit_set import Reservation
from policies.plan import DeploymentPlan
from policies.policy_config import ModelLimitSettings
from policies.pricing.budget_check import reached_models
from policies.pricing.estimate import SpendEstimate
from policies.token_estimate import estimate_tokens
from providers.types import Endpoint
from router.accounting import RequestRecord
from router.gateway import Gateway


async def admit_every_call(
    gateway: Gateway,
    head: Reservation | None,
    record: RequestRecord,
    endpoint: Endpoint,
    body: Mapping[str, Any],
    on_refused: Callable[[str, str], None],
) -> Reservation | None:
    """Reserve the tokens of every upstream call the first deployment able to serve the
    request would make, and arm the trace to top the reservation up for a later one.
    `head`: what `Limiter.admit_request` took from the headers (the request is counted
    there, once). Raises the 429 when the limits cannot cover it; the caller then settles
    `head` to 0, as on any error, and nothing stays taken."""
    route, trace = record.route, record.trace
    assert route is not None
    assert trace is not None
    plan = route.plan
    calls = gateway.dispatcher.first_calls(plan, endpoint, body)
    settings = gateway.config.models.get(plan.model)
    spend: list[SpendEstimate] = []  # priced once, and only where a dollar budget applies

    def nanos(at_once: Sequence[UpstreamCalls]) -> int:
        if not spend:
            labels = [t.label for t in (*plan.targets, *plan.context_window_targets)]
            spend.append(SpendEstimate.of(gateway.prices, labels, body))
        return sum(spend[0].nanos(calls) for calls in at_once)

    reservation = await gateway.limiter.admit_tokens(
        head,
        body,
        on_refused,
        prompt_reads=calls.prompt_reads,
        model=(plan.model, settings.limits if settings is not None else None),
        nanos=lambda: nanos([calls]),
        also_models=steered_budgets(gateway.config, plan),
    )
    record.extra_headers.update(rate_limit_headers(reservation))

    async def cover(at_once: Sequence[UpstreamCalls]) -> None:
        try:
            tokens = sum(estimate_tokens(body, calls.prompt_reads) for calls in at_once)
            await gateway.limiter.cover(reservation, tokens, on_refused, lambda: nanos(at_once))
        finally:  # a refusal's headers, too, say what is left
            record.extra_headers.update(rate_limit_headers(reservation))

    trace.cover = cover
    return reservation


def steered_budgets(
    config: TurnoutConfig, plan: DeploymentPlan
) -> list[tuple[str, ModelLimitSettings | None]]:
    """The models other than the routed one whose budgets count this request whole (see
    the module docstring): those its plan reaches that the routed model's configured
    fallbacks do not, or every one it reaches when none of the routed model's own
    deployments is left in it."""
    reached = {t.model_name for t in (*plan.targets, *plan.context_window_targets)}
    reached.discard(plan.model)
    if not reached:  # the common case: the routed model's deployments alone
        return []
    if any(t.model_name == plan.model for t in plan.targets):
        reached -= reached_models(config, {plan.model})
    return [
        (name, route.limits)
        for name in sorted(reached)
        if (route := config.models.get(name)) is not None and route.limits is not None
    ]
