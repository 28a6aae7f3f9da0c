"""Spend's unit: the totals of one (UTC day, team, key, model, deployment).

Kept as plain tuples and lists of integers: the request path adds to them for every
request, and dollars are whole nano-dollars so every store adds them exactly."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any, NamedTuple, TypeVar

NANOS_PER_USD = 1_000_000_000
EPOCH = date(1970, 1, 1)

# The totals of a row, in this order: each store keeps them as these integer fields.
FIELDS = ("nanos", "requests", "prompt_tokens", "completion_tokens", "unpriced_requests")


class SpendKey(NamedTuple):
    """`day`: days since 1970-01-01, UTC (an integer is cheaper to make per request than
    a date); `team` and `key` are "" for no team; `deployment` "" when none was called."""

    day: int
    team: str
    key: str
    model: str
    deployment: str


# nanos, requests, prompt_tokens, completion_tokens, unpriced_requests (see FIELDS)
Totals = list[int]
Rows = dict[SpendKey, Totals]
# A row's key as the request path makes it: a plain tuple, equal to its `SpendKey`.
RowKey = tuple[int, str, str, str, str]
K = TypeVar("K", bound=tuple[int, str, str, str, str])


def empty() -> Totals:
    return [0, 0, 0, 0, 0]


def merge(into: dict[K, Totals], rows: Iterable[tuple[K, Totals]]) -> None:
    """Add `rows` (a mapping's items) to `into`."""
    for key, totals in rows:
        found = into.get(key)
        if found is None:
            into[key] = list(totals)
        else:
            for i, value in enumerate(totals):
                found[i] += value


def day_number(day: date) -> int:
    return (day - EPOCH).days


def day_date(number: int) -> date:
    return EPOCH + timedelta(days=number)


@dataclass(frozen=True, slots=True)
class DayRange:
    """Days `first` to `last`, both included; `team` None: every team."""

    first: int
    last: int
    team: str | None = None

    def __contains__(self, key: SpendKey) -> bool:
        return self.first <= key.day <= self.last and (self.team is None or key.team == self.team)

    def days(self) -> range:
        return range(self.first, self.last + 1)


def as_json(key: SpendKey, totals: Totals) -> dict[str, Any]:
    """One row as the spend endpoint answers it."""
    return {
        "day": day_date(key.day).isoformat(),
        "team": key.team or None,
        "key": key.key or None,
        "model": key.model,
        "deployment": key.deployment or None,
        "usd": totals[0] / NANOS_PER_USD,
        "requests": totals[1],
        "prompt_tokens": totals[2],
        "completion_tokens": totals[3],
        "unpriced_requests": totals[4],
    }
