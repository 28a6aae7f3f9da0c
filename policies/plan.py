"""Turning a request's model name into an ordered plan of deployments."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from policies.affinity.key import AffinityKey
from policies.config import Deployment, ModelRoute, RetrySettings, TurnoutConfig
from policies.errors import ApiError, model_not_found
from policies.policy_config import HedgeSettings, Strategy
from policies.translation import Mode
from providers.timeouts import TimeoutOverrides


@dataclass(frozen=True, slots=True)
class Target:
    """One deployment to try, and the model name it was reached through."""

    model_name: str
    deployment: Deployment

    @property
    def label(self) -> str:
        return self.deployment.label


@dataclass(frozen=True, slots=True)
class DeploymentPlan:
    """Deployments in the order to try them, and the budgets for trying.

    `targets` are the model's deployments, then its configured fallbacks', then those the
    request added. `context_window_targets` replace the rest of the chain when a
    deployment says the prompt is too long for it.
    """

    model: str
    targets: tuple[Target, ...]
    context_window_targets: tuple[Target, ...]
    retry: RetrySettings
    deadline_s: float
    mode: Mode = Mode.EMULATE
    strategy: Strategy = Strategy.PRIORITY
    hedge: HedgeSettings | None = None  # streams: when to hedge (None: never)
    # By model name: the upstream timeouts a model's deployments are called with, where
    # the model has its own (`timeouts:` on a model); others use their provider's.
    timeouts: Mapping[str, TimeoutOverrides] = field(default_factory=dict)
    # `strategy: affinity`: the request's session, prompt blocks and cache key, set per
    # request by the router (policies/affinity/key.py); None for every other strategy.
    affinity: AffinityKey | None = None

    def timeouts_for(self, target: Target) -> TimeoutOverrides | None:
        return self.timeouts.get(target.model_name)


def plan_request(
    config: TurnoutConfig, model: str, request_fallbacks: Sequence[str] = ()
) -> DeploymentPlan:
    route = config.models.get(model)
    if route is None:
        raise model_not_found(model)
    for i, name in enumerate(request_fallbacks):
        if name not in config.models:
            raise ApiError(
                f"Fallback model `{name}` does not exist or you do not have access to it.",
                status=400,
                param=f"fallbacks[{i}]",
                code="model_not_found",
            )
    chain = _unique([model, *route.fallbacks, *request_fallbacks])
    return DeploymentPlan(
        model=model,
        targets=tuple(_targets(config, chain)),
        context_window_targets=tuple(_targets(config, _unique(route.context_window_fallbacks))),
        retry=config.retry,
        deadline_s=config.total_for(model),
        mode=route.translation,
        strategy=route.strategy,
        hedge=_hedge(config, route),
        timeouts=_timeouts(config, [*chain, *route.context_window_fallbacks]),
    )


def _hedge(config: TurnoutConfig, route: ModelRoute) -> HedgeSettings | None:
    hedge = config.hedge if route.hedge is None else route.hedge.over(config.hedge)
    return hedge if hedge.enabled else None


def _timeouts(config: TurnoutConfig, models: Iterable[str]) -> dict[str, TimeoutOverrides]:
    own: dict[str, TimeoutOverrides] = {}
    for name in models:
        route = config.models[name]
        overrides = route.timeouts.upstream() if route.timeouts is not None else None
        if overrides is not None:
            own[name] = overrides
    return own


def _targets(config: TurnoutConfig, models: Iterable[str]) -> Iterable[Target]:
    for name in models:
        for deployment in config.models[name].deployments:
            yield Target(name, deployment)


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))


class Planner:
    """Plans are pure functions of (model, request fallbacks) under a frozen config, so
    each distinct pair is planned once per app."""

    MAX_CACHED = 4096

    def __init__(self, config: TurnoutConfig) -> None:
        self._config = config
        self._plans: dict[tuple[str, tuple[str, ...]], DeploymentPlan] = {}

    def plan(self, model: str, request_fallbacks: Sequence[str] = ()) -> DeploymentPlan:
        key = (model, tuple(request_fallbacks))
        plan = self._plans.get(key)
        if plan is None:
            plan = plan_request(self._config, model, request_fallbacks)
            if len(self._plans) < self.MAX_CACHED:
                self._plans[key] = plan
        return plan
