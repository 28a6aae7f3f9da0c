"""The one small interface spend is kept behind: add rows, read a range of days.

`SqliteSpend` (one replica: a table in a database file beside the files' records) and
`RedisSpend` (several replicas sharing the Redis that `state` names) sit side by side
behind it, as `policies/state/` has for limits. Adding is an increment on the stored
totals (an UPSERT, HINCRBY), so replicas flushing the same row at once both count. A
store that cannot be reached raises `StorageUnavailable`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from policies.spend.rows import DayRange, Rows, SpendKey, Totals


class SpendStore(Protocol):
    async def add(self, rows: Mapping[SpendKey, Totals]) -> None:
        """Add `rows` to the stored totals, all or none."""

    async def read(self, days: DayRange) -> Rows:
        """The stored totals of the rows in `days`."""

    async def aclose(self) -> None: ...

    def describe(self) -> str:
        """For the log: where spend is kept (no credentials)."""
