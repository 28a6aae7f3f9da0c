"""Spend in SQLite, for one replica: one row per (day, team, key, model, deployment),
added to by an UPSERT. Its own database file (WAL) beside the files' records, so a
flush never waits behind a batch's writes; several worker processes of one replica
flush into it safely (SQLite serialises their writes, each waiting up to its timeout)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Mapping
from pathlib import Path

import aiosqlite

from policies.spend.rows import DayRange, Rows, SpendKey, Totals
from policies.storage.base import StorageUnavailable

BUSY_TIMEOUT_S = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
    day INTEGER NOT NULL,
    team TEXT NOT NULL,
    key TEXT NOT NULL,
    model TEXT NOT NULL,
    deployment TEXT NOT NULL,
    nanos INTEGER NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    unpriced_requests INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (day, team, key, model, deployment)
)
"""

_ADD = """
INSERT INTO spend (day, team, key, model, deployment, nanos, requests, prompt_tokens,
                   completion_tokens, unpriced_requests)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (day, team, key, model, deployment) DO UPDATE SET
    nanos = nanos + excluded.nanos,
    requests = requests + excluded.requests,
    prompt_tokens = prompt_tokens + excluded.prompt_tokens,
    completion_tokens = completion_tokens + excluded.completion_tokens,
    unpriced_requests = unpriced_requests + excluded.unpriced_requests
"""

_READ = """
SELECT day, team, key, model, deployment, nanos, requests, prompt_tokens,
       completion_tokens, unpriced_requests
FROM spend WHERE day BETWEEN ? AND ? AND (? IS NULL OR team = ?)
"""


@contextlib.contextmanager
def _reachable() -> Iterator[None]:
    try:
        yield
    except sqlite3.OperationalError as exc:  # locked past the timeout, disk gone
        raise StorageUnavailable(f"spend database: {exc}") from exc


class SqliteSpend:
    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        """Use `open`."""
        self._db, self._path = db, path

    @classmethod
    async def open(cls, path: Path) -> SqliteSpend:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.execute(_SCHEMA)
        except BaseException:
            await db.close()
            raise
        return cls(db, path)

    async def add(self, rows: Mapping[SpendKey, Totals]) -> None:
        if not rows:
            return
        values = [(*key, *totals) for key, totals in rows.items()]
        with _reachable():
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                await self._db.executemany(_ADD, values)
            except BaseException:
                await self._db.execute("ROLLBACK")
                raise
            await self._db.execute("COMMIT")

    async def read(self, days: DayRange) -> Rows:
        with _reachable():
            found = await self._db.execute_fetchall(
                _READ, (days.first, days.last, days.team, days.team)
            )
        return {SpendKey(*row[:5]): list(row[5:]) for row in found}

    async def aclose(self) -> None:
        await self._db.close()

    def describe(self) -> str:
        return str(self._path)
