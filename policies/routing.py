"""From a caller and a request to a route: which model, which deployments in which order
of preference, under which translation mode and strategy — before any backend is called.

Order of decisions: the team's model list (a model outside it does not exist for the
team), the team's first matching rule, the request's own `router` options (where the team
allows them), then the plan for the resulting model with its fallbacks, each of which must
also be on the team's list."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from policies.affinity.key import AffinityKey, affinity_key
from policies.affinity.settings import AffinitySettings
from policies.config import TurnoutConfig
from policies.errors import ApiError, model_not_found
from policies.model_names import ModelNames, Resolved
from policies.plan import DeploymentPlan, Planner, Target
from policies.policy_config import Rule, Strategy
from policies.rules import RequestFacts, first_match
from policies.teams import Caller
from policies.translation import Mode

# Why a deployment of a model outside the caller's team was left out. Such deployments do
# not exist for the team: no error, header or explanation shown to it names them.
OUTSIDE_TEAM = "model not in the team's list"


@dataclass(frozen=True, slots=True)
class RouterChoices:
    """The request's routing options, every spelling of each gathered here (the `router`
    object, the top-level `fallbacks`: see router/routing_options.py), so that one check
    of `narrows` covers them all."""

    translation: Mode | None = None
    only: Sequence[str] | None = None
    ignore: Sequence[str] | None = None
    strategy: Strategy | None = None
    fallbacks: Sequence[str] = ()

    @property
    def narrows(self) -> bool:
        return bool(self.only is not None or self.ignore or self.strategy or self.fallbacks)


@dataclass(frozen=True, slots=True)
class Route:
    plan: DeploymentPlan
    strategy: Strategy
    mode: Mode
    team: str | None = None
    rule: str | None = None  # the matched rule's name, or `rules[i]`
    excluded: tuple[tuple[str, str], ...] = ()  # (deployment label, why) left out by policy
    asked: str = ""  # the model name the request gave
    resolved: Resolved | None = None  # the configured model it named, and how

    def excluded_for(self, caller: Caller) -> list[tuple[str, str]]:
        return visible_exclusions(self.excluded, caller)


class Router:
    def __init__(self, config: TurnoutConfig, planner: Planner) -> None:
        self._config = config
        self._planner = planner
        # Providers whose API takes `prompt_cache_key` (`affinity.set_prompt_cache_key`).
        self._cache_keyed = {
            name for name, p in config.providers.items() if getattr(p, "kind", None) == "openai"
        }

    def route(
        self,
        caller: Caller,
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        choices: RouterChoices | None = None,
    ) -> Route:
        asked = str(body.get("model", ""))
        names = self._config.model_names
        # A team's list names configured models: an alias or pattern of one is that model.
        # A name nothing answers to may still be sent elsewhere by a rule; else the plan
        # refuses it (404).
        resolved = names.resolve(asked)
        model = resolved.configured if resolved is not None else asked
        if not caller.may_use(model):
            raise model_not_found(asked)
        choices = choices or RouterChoices()
        team = caller.team_settings
        found = (
            first_match(team.rules, RequestFacts.of(body, headers, configured=model))
            if team is not None and team.rules
            else None
        )
        rule = found[1] if found is not None else None
        rule_name = (rule.name or f"rules[{found[0]}]") if found and rule else None
        if rule is not None and rule.use.model is not None:
            model = rule.use.model
        if choices.narrows and team is not None and not team.allow_router_options:
            raise ApiError(
                f"Team `{caller.team}` may not choose deployments, fallbacks or strategies "
                "per request (`router` options or `fallbacks`).",
                status=403,
                type="permission_error",
                param="router",
                code="router_options_not_allowed",
            )
        plan = self._planner.plan(model, _allowed_fallbacks(caller, choices, names))
        excluded: list[tuple[str, str]] = []
        filters = _filters(caller, model, rule, rule_name, choices)
        targets = _apply(filters, plan.targets, excluded)
        overflow = _apply(filters, plan.context_window_targets, excluded)
        if not targets:
            raise _none_left(model, caller, excluded)
        strategy = choices.strategy or (rule.use.strategy if rule else None) or plan.strategy
        mode = choices.translation or caller.translation or plan.mode
        affinity = (
            self._affinity(model, targets, body, headers, caller.team)
            if strategy is Strategy.AFFINITY
            else None
        )
        if excluded or strategy != plan.strategy or mode != plan.mode or affinity is not None:
            plan = replace(
                plan,
                targets=tuple(targets),
                context_window_targets=tuple(overflow),
                strategy=strategy,
                mode=mode,
                affinity=affinity,
            )
        return Route(plan, strategy, mode, caller.team, rule_name, tuple(excluded), asked, resolved)

    def _affinity(
        self,
        model: str,
        targets: Sequence[Target],
        body: Mapping[str, Any],
        headers: Mapping[str, str],
        team: str | None,
    ) -> AffinityKey:
        """The request's session, prompt blocks and cache key (policies/affinity/key.py)."""
        route = self._config.models.get(model)
        settings = (route.affinity if route is not None else None) or AffinitySettings()
        keyed = (
            [t.label for t in targets if t.deployment.provider in self._cache_keyed]
            if settings.set_prompt_cache_key
            else []
        )
        return affinity_key(settings, body, headers, team, keyed)


Filter = tuple[Callable[[Target], bool], str]  # keep this target? and why not, if not


def _filters(
    caller: Caller,
    model: str,
    rule: Rule | None,
    rule_name: str | None,
    choices: RouterChoices,
) -> list[Filter]:
    """What narrows every list of deployments a request may reach, context-window
    fallbacks included: the team's models, the rule's deployments, `router.only/ignore`."""
    filters: list[Filter] = []
    team = caller.team_settings
    if team is not None and team.models is not None:
        allowed = {*team.models, model}  # a rule may send the team to another model
        filters.append((lambda t: t.model_name in allowed, OUTSIDE_TEAM))
    if rule is not None and rule.use.deployments is not None:
        names = rule.use.deployments
        filters.append((lambda t: _named(t, names), f"not in {rule_name}"))
    if choices.only is not None:
        only = choices.only
        filters.append((lambda t: _named(t, only), "not in router.only"))
    if choices.ignore:
        ignore = choices.ignore
        filters.append((lambda t: not _named(t, ignore), "in router.ignore"))
    return filters


def _apply(
    filters: list[Filter], targets: Sequence[Target], excluded: list[tuple[str, str]]
) -> list[Target]:
    kept: list[Target] = []
    for target in targets:
        why = next((why for keep, why in filters if not keep(target)), None)
        if why is None:
            kept.append(target)
        else:
            excluded.append((target.label, why))
    return kept


def visible_exclusions(
    excluded: Sequence[tuple[str, str]], caller: Caller
) -> list[tuple[str, str]]:
    """The exclusions `caller` may be told of: an admin sees all of them, anyone else none
    of the deployments outside its team's models."""
    return [entry for entry in excluded if caller.admin or entry[1] != OUTSIDE_TEAM]


def _none_left(model: str, caller: Caller, excluded: list[tuple[str, str]]) -> ApiError:
    """The error for a request whose choices left nothing: why each deployment was left
    out, naming only those the caller may know of."""
    shown = visible_exclusions(excluded, caller)
    why = f" ({'; '.join(f'{label}: {why}' for label, why in shown)})" if shown else ""
    return ApiError(
        f"No deployment of `{model}` is left to try after the routing choices{why}.",
        param="router",
        code="no_deployment",
    )


def _allowed_fallbacks(caller: Caller, choices: RouterChoices, names: ModelNames) -> list[str]:
    """The request's fallback models, as configured names (they resolve as `model` does);
    one unknown, or outside the team's list, is refused as if it did not exist."""
    configured: list[str] = []
    for i, name in enumerate(_unique(list(choices.fallbacks))):
        found = names.resolve(name)
        if found is None or not caller.may_use(found.configured):
            raise ApiError(
                f"Fallback model `{name}` does not exist or you do not have access to it.",
                param=f"fallbacks[{i}]",
                code="model_not_found",
            )
        configured.append(found.configured)
    return _unique(configured)


def _named(target: Target, names: Sequence[str]) -> bool:
    return target.deployment.provider in names or target.label in names


def _unique(names: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(names))
