"""The spend of requests served here, added up in memory on the request path (a dict
increment per deployment a request called) and flushed in the background to a durable
`SpendStore` shared by the replicas: every `interval_s`, and once more on close.

A flush takes the pending rows away and adds them to the store; a flush that fails puts
them back, to go with the next one, so an outage of the store loses nothing unless the
process dies during it. Reads (the spend endpoint) and flushes take one lock, so a read
sees the store plus what is not flushed yet, each row exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

import structlog

from policies.pricing.cost import NANOS_PER_USD, RequestCost
from policies.spend.rows import DayRange, RowKey, Rows, SpendKey, Totals, merge
from policies.spend.store import SpendStore
from policies.storage.base import StorageUnavailable

log = structlog.get_logger("turnout.spend")

SECONDS_PER_DAY = 86400
FLUSH_INTERVAL_S = 1.0


class SpendBook:
    def __init__(
        self, clock: Callable[[], float] = time.time, interval_s: float = FLUSH_INTERVAL_S
    ) -> None:
        self._clock, self.interval_s = clock, interval_s
        self._pending: dict[RowKey, Totals] = {}
        self._store: SpendStore | None = None
        self._lock = asyncio.Lock()
        self._flusher: asyncio.Task[None] | None = None

    def record(
        self, team: str, key: str, model: str, cost: RequestCost, answered: str | None
    ) -> None:
        """One finished request: each deployment it called (billed) gets its cost and
        tokens; the request itself counts once, in the row of the deployment that
        `answered` (else the first called). A deployment with no price counts the request
        among its `unpriced_requests` and adds no dollars."""
        # Plain tuples as keys (equal to `SpendKey`s, cheaper to make); written out, as
        # this runs for every request (issue 20: spend accounting within 20 us).
        day = int(self._clock() // SECONDS_PER_DAY)
        pending = self._pending
        shares = cost.shares
        if not shares:  # nothing billed: a cache hit, or every call refused
            row = (day, team, key, model, answered or "")
            totals = pending.get(row)
            if totals is None:
                totals = pending[row] = [0, 0, 0, 0, 0]
            totals[1] += 1
            return
        counted = shares[0].label
        for share in shares:
            if share.label == answered:
                counted = answered
        for share in shares:
            row = (day, team, key, model, share.label)
            totals = pending.get(row)
            if totals is None:
                totals = pending[row] = [0, 0, 0, 0, 0]
            if share.usd is None:
                totals[4] += 1
            else:
                totals[0] += round(share.usd * NANOS_PER_USD)
            if share.label == counted:
                totals[1] += 1
            totals[2] += share.prompt_tokens
            totals[3] += share.completion_tokens

    def start(self, store: SpendStore) -> None:
        """Flush to `store` from now on (it is closed with the book)."""
        self._store = store
        self._flusher = asyncio.get_running_loop().create_task(self._flush_every())

    async def _flush_every(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.flush()
            except Exception as exc:  # a bug: said, and the next flush tries again
                log.error("spend_flush_error", exc_info=exc)

    async def flush(self) -> None:
        """Add what is pending to the store (kept pending if the store is unreachable)."""
        if self._store is None or not self._pending:
            return
        async with self._lock:
            rows = {SpendKey(*key): totals for key, totals in self._pending.items()}
            self._pending = {}
            try:
                await self._store.add(rows)
            except (StorageUnavailable, OSError) as exc:
                merge(self._pending, rows.items())  # with the next flush
                log.warning("spend_flush_failed", error=str(exc), rows=len(rows))
            except BaseException:
                merge(self._pending, rows.items())
                raise

    async def read(self, days: DayRange) -> Rows:
        """The stored rows of `days`, plus those not flushed yet."""
        async with self._lock:
            found = await self._store.read(days) if self._store is not None else {}
            pending = ((SpendKey(*key), totals) for key, totals in self._pending.items())
            merge(found, [(key, totals) for key, totals in pending if key in days])
        return found

    async def aclose(self) -> None:
        """Stop flushing, flush what is left, close the store."""
        if self._flusher is not None:
            async with self._lock:  # never cut a flush short: its rows might count twice
                self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        if self._store is not None:
            await self.flush()
            await self._store.aclose()
            self._store = None
