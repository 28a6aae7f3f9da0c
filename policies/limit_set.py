"""The limits a request is held to and what it holds of them: the store's `Limit`s that a
scope's `LimitSettings` define (rpm and tpm as token buckets over a minute, token and
dollar budgets over calendar periods in UTC), each counting one `Unit`, and a request's
`Reservation` against them.

A request may be held to a `share` of each limit (a batch line: live traffic keeps the
rest): it is admitted only while `headroom` is left after its cost, so a live request,
whose share is the whole limit, always finds that rest."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from policies.concurrency import SlotLease
from policies.policy_config import (
    BudgetSettings,
    LimitSettings,
    ModelLimitSettings,
    UsdBudgetSettings,
)
from policies.state.base import Limit, LimitKind, LimitState

MINUTE = 60.0


class Unit(StrEnum):
    """What a limit counts: a request is counted once, from the headers; tokens and
    dollars are reserved on an estimate and settled on what the request used."""

    REQUESTS = "requests"
    TOKENS = "tokens"
    NANOS = "nanos"  # US dollars, in whole nano-dollars (the stores keep integers)


@dataclass(slots=True)  # not frozen: `Limiter.cover` raises what a request holds
class Reservation:
    """What one request holds of the limits that apply to it, as admission left them:
    `reserved_tokens` of every TOKENS limit, `reserved_nanos` of every NANOS one."""

    limits: tuple[Limit, ...]
    units: tuple[Unit, ...]  # what each of `limits` counts
    reserved_tokens: int
    states: tuple[LimitState, ...]
    lease: SlotLease | None = None  # given back by `Limiter.release` when the request ends
    share: float = 1.0  # of each limit this request may use; `cover` holds it to the same
    reserved_nanos: int = 0

    def counting(self, *units: Unit) -> list[int]:
        """The indices of the limits that count one of `units`."""
        return [i for i, unit in enumerate(self.units) if unit in units]

    def reserved(self, unit: Unit) -> int:
        """What this request holds of each limit counting `unit` (a request: 1)."""
        if unit is Unit.TOKENS:
            return self.reserved_tokens
        return self.reserved_nanos if unit is Unit.NANOS else 1


def share_of(capacity: int, share: float) -> int:
    """What a `share` of `capacity` may use: at least 1, so a small share still moves.
    The epsilon keeps a product a hair under a whole number on it: 0.29 * 100 is 28.99..."""
    return min(capacity, max(1, math.floor(share * capacity + 1e-9)))


def headroom(limits: Sequence[Limit], share: float) -> list[int] | None:
    """What a request with `share` must leave of each limit (the store's `headroom`);
    None for a whole share, so live requests take exactly the path they always took."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"a limit share must be in (0, 1], not {share}")
    if share == 1.0:
        return None
    return [max(0, limit.capacity - share_of(limit.capacity, share)) for limit in limits]


def scope_limits(scope: str, settings: LimitSettings, now: float) -> list[tuple[Limit, Unit]]:
    """The limits `settings` define for `scope` (`key:...`, `team:...`), each with what it
    counts."""
    result: list[tuple[Limit, Unit]] = []
    if settings.rpm is not None:
        result.append((Limit(f"rpm:{scope}", LimitKind.RATE, settings.rpm, MINUTE), Unit.REQUESTS))
    if settings.tpm is not None:
        result.append((Limit(f"tpm:{scope}", LimitKind.RATE, settings.tpm, MINUTE), Unit.TOKENS))
    return result + budget_limits(scope, settings, now)


def budget_limits(
    scope: str, settings: LimitSettings | ModelLimitSettings, now: float
) -> list[tuple[Limit, Unit]]:
    """The calendar budgets `settings` define for `scope` (a model's: `model:<name>`).
    A dollar budget's key is `budget_usd:<scope>:<per>`: under the same hash tag as the
    scope's other limits (policies/state/redis_keys.py)."""
    result: list[tuple[Limit, Unit]] = []
    if settings.budget_tokens is not None:
        budget = settings.budget_tokens
        limit = _budget(f"budget:{scope}:{budget.per}", budget, budget.tokens, now)
        result.append((limit, Unit.TOKENS))
    if settings.budget_usd is not None:
        usd = settings.budget_usd
        result.append((_budget(f"budget_usd:{scope}:{usd.per}", usd, usd.nanos, now), Unit.NANOS))
    return result


def _budget(
    key: str, budget: BudgetSettings | UsdBudgetSettings, capacity: int, now: float
) -> Limit:
    end = period_end(budget, now)
    return Limit(key, LimitKind.BUDGET, capacity, end - period_start(budget, now), end)


def period_start(budget: BudgetSettings | UsdBudgetSettings, now: float) -> float:
    at = datetime.fromtimestamp(now, UTC)
    if budget.per == "hour":
        start = at.replace(minute=0, second=0, microsecond=0)
    elif budget.per == "day":
        start = at.replace(hour=0, minute=0, second=0, microsecond=0)
    elif budget.per == "week":
        start = (at - timedelta(days=at.weekday())).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
    else:
        start = at.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return start.timestamp()


def period_end(budget: BudgetSettings | UsdBudgetSettings, now: float) -> float:
    start = datetime.fromtimestamp(period_start(budget, now), UTC)
    if budget.per == "hour":
        end = start + timedelta(hours=1)
    elif budget.per == "day":
        end = start + timedelta(days=1)
    elif budget.per == "week":
        end = start + timedelta(weeks=1)
    else:
        end = (start + timedelta(days=32)).replace(day=1)
    return end.timestamp()
