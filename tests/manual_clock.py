"""A wall clock that tests move by hand, for breakers, limits and budgets.

`create_app(config, clock=...)` reads it from the server's thread while the test moves it
from its own; a float read or write is atomic, so no lock is needed."""

from __future__ import annotations

from datetime import UTC, datetime

# Noon UTC on a Monday: far from every hour/day/week/month boundary unless a test moves it.
NOON = datetime(2024, 1, 15, 12, 0, tzinfo=UTC).timestamp()


class ManualClock:
    def __init__(self, start: float = NOON) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
