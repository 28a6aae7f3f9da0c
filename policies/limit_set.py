"""The limits a request is held to and what it holds of them: the store's `Limit`s that a
scope's `LimitSettings` define (rpm and tpm as token buckets over a minute, token budgets
over calendar periods in UTC), and a request's `Reservation` against them.

A request may be held to a `share` of each limit (a batch line: live traffic keeps the
rest): it is admitted only while `headroom` is left after its cost, so a live request,
whose share is the whole limit, always finds that rest."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from policies.concurrency import SlotLease
from policies.policy_config import BudgetSettings, LimitSettings
from policies.state.base import Limit, LimitKind, LimitState

MINUTE = 60.0


@dataclass(slots=True)  # not frozen: `Limiter.cover` raises what a request holds
class Reservation:
    """What one request holds of the limits that apply to it, as admission left them."""

    limits: tuple[Limit, ...]
    token_limits: tuple[bool, ...]  # which of `limits` count tokens (the rest: requests)
    reserved_tokens: int
    states: tuple[LimitState, ...]
    lease: SlotLease | None = None  # given back by `Limiter.release` when the request ends
    share: float = 1.0  # of each limit this request may use; `cover` holds it to the same


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


def scope_limits(scope: str, settings: LimitSettings, now: float) -> list[tuple[Limit, bool]]:
    """The limits `settings` define for `scope` (`key:...`, `team:...`), each with whether
    it counts tokens."""
    result: list[tuple[Limit, bool]] = []
    if settings.rpm is not None:
        result.append((Limit(f"rpm:{scope}", LimitKind.RATE, settings.rpm, MINUTE), False))
    if settings.tpm is not None:
        result.append((Limit(f"tpm:{scope}", LimitKind.RATE, settings.tpm, MINUTE), True))
    if settings.budget_tokens is not None:
        budget = settings.budget_tokens
        end = period_end(budget, now)
        result.append(
            (
                Limit(
                    f"budget:{scope}:{budget.per}",
                    LimitKind.BUDGET,
                    budget.tokens,
                    end - period_start(budget, now),
                    end,
                ),
                True,
            )
        )
    return result


def period_start(budget: BudgetSettings, now: float) -> float:
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


def period_end(budget: BudgetSettings, now: float) -> float:
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
