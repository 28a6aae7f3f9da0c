"""Rows that many tasks write at once, committed together.

A row written on its own costs a round trip to SQLite's writer thread and a commit (a WAL
append): measured as most of what storing a response adds to a request. Requests that
store at the same moment instead hand their rows to one flush, which writes all that are
waiting in one transaction (`executemany`), and each is answered once that commit is done:
a caller still never returns before its row is committed. While a flush runs, new rows
wait for the next one, so under load the groups grow by themselves and with no load a row
is written at once. (No library does this for aiosqlite: SQLite's own group commit is for
several connections, and Turnout uses one.)
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

Rows = Sequence[tuple[Any, ...]]


class GroupCommit:
    """`await group.write(row)`: returns once `row` is committed with its group."""

    def __init__(self, commit: Callable[[Rows], Awaitable[None]]) -> None:
        self._commit = commit  # writes every row given in one transaction
        self._waiting: list[tuple[tuple[Any, ...], asyncio.Future[None]]] = []
        self._flush: asyncio.Task[None] | None = None

    async def write(self, row: tuple[Any, ...]) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # Retrieved even when its writer stopped waiting (cancelled): no "exception was
        # never retrieved" for a commit that failed after its writer left.
        done.add_done_callback(_retrieve)
        self._waiting.append((row, done))
        if self._flush is None or self._flush.done():
            self._flush = asyncio.get_running_loop().create_task(self._flush_all())
        # Shielded: a caller cancelled (its client went away) does not cancel the others'
        # commit; its own row is still written.
        await asyncio.shield(done)

    async def _flush_all(self) -> None:
        while self._waiting:
            group, self._waiting = self._waiting, []
            try:
                await self._commit([row for row, _ in group])
            except BaseException as exc:
                if isinstance(exc, asyncio.CancelledError):  # shutting down: nobody is left
                    group, self._waiting = group + self._waiting, []  # to flush the rest
                for _, done in group:
                    if not done.done():
                        done.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for _, done in group:
                if not done.done():
                    done.set_result(None)


def _retrieve(done: asyncio.Future[None]) -> None:
    if not done.cancelled():
        done.exception()
