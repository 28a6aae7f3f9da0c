"""A dollar budget counts only what it can price: start-up and every reload refuse a
config whose dollar budgets (`budget_usd` on a key, a team, a team's keys or a model)
apply to a model with a deployment that has no price. Counting such a deployment's calls
as $0 would let a budget that looks set never fire; guessing a price would refuse or
admit on a figure nobody chose. An operator who means a local model to be free says so
with `price: {}` on it.

Which models a budget reaches: a model's, that model and its fallbacks (configured and
for context windows, transitively); a team's or its keys', the models the team may use
(all when it lists none) and those its rules send requests to, with their fallbacks; a
key outside any team's, every model. Fallbacks a request adds itself are checked when it
is admitted (policies/pricing/estimate.py)."""

from __future__ import annotations

from collections.abc import Iterable

from policies.config import TurnoutConfig
from policies.policy_config import LimitSettings, ModelLimitSettings
from policies.pricing.book import PriceBook
from policies.pricing.table import shipped_table


def dollar_budget_problems(config: TurnoutConfig) -> list[str]:
    """`unpriced_budget_problems` with the prices the gateway will use (the shipped table
    is read only where some dollar budget is set)."""
    if next(iter(_budget_scopes(config)), None) is None:
        return []
    return unpriced_budget_problems(config, PriceBook.from_config(config, shipped_table()))


def unpriced_budget_problems(config: TurnoutConfig, book: PriceBook) -> list[str]:
    """One line per dollar budget that reaches unpriced deployments (config key path and
    the deployments' labels); empty when every budget can count what it is charged."""
    problems: list[str] = []
    for where, models in _budget_scopes(config):
        missing = sorted(
            {
                deployment.label
                for model in _reached(config, models)
                for deployment in config.models[model].deployments
                if book.price(deployment.label) is None
            }
        )
        if missing:
            problems.append(
                f"{where}: a dollar budget cannot count what deployments with no price "
                f"spend: {', '.join(missing)}. Give each a `price:` (`price: {{}}` if its "
                "calls are free) or list its model under `prices:`"
            )
    return problems


def _budget_scopes(config: TurnoutConfig) -> Iterable[tuple[str, set[str]]]:
    every = set(config.models)
    for i, key in enumerate(config.keys):
        if _has_usd(key.limits):
            yield f"keys[{i}].limits.budget_usd", every
    for name, team in config.teams.items():
        allowed = set(team.models) if team.models is not None else set(every)
        allowed |= {rule.use.model for rule in team.rules if rule.use.model is not None}
        for field, settings in (("limits", team.limits), ("key_limits", team.key_limits)):
            if _has_usd(settings):
                yield f"teams.{name}.{field}.budget_usd", allowed
    for name, route in config.models.items():
        if _has_usd(route.limits):
            yield f"models.{name}.limits.budget_usd", {name}


def _has_usd(settings: LimitSettings | ModelLimitSettings | None) -> bool:
    return settings is not None and settings.budget_usd is not None


def reached_models(config: TurnoutConfig, models: set[str]) -> set[str]:
    """`models` and every model their configured fallbacks lead to."""
    return _reached(config, models)


def _reached(config: TurnoutConfig, models: set[str]) -> set[str]:
    """`models` and every model their fallbacks lead to (only configured ones)."""
    seen: set[str] = set()
    todo = [m for m in models if m in config.models]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.add(model)
        route = config.models[model]
        todo.extend(
            m for m in (*route.fallbacks, *route.context_window_fallbacks) if m in config.models
        )
    return seen
