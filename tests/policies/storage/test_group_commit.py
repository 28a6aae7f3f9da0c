"""Rows written at the same moment go in one commit; each writer returns once its row is
committed; a failed commit fails every writer of its group and no other; a writer whose
task is cancelled does not cancel the commit of the others."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from policies.storage.group_commit import GroupCommit


class Recorder:
    def __init__(self, fail_first: bool = False) -> None:
        self.groups: list[list[tuple[Any, ...]]] = []
        self.fail_first = fail_first
        self.gate = asyncio.Event()
        self.gate.set()

    async def commit(self, rows: Sequence[tuple[Any, ...]]) -> None:
        await self.gate.wait()
        await asyncio.sleep(0)
        if self.fail_first and not self.groups:
            self.groups.append([])
            raise OSError("disk full")
        self.groups.append(list(rows))


async def test_concurrent_rows_share_commits_and_all_are_written() -> None:
    recorder = Recorder()
    group = GroupCommit(recorder.commit)

    await asyncio.gather(*(group.write((i,)) for i in range(50)))

    written = [row for rows in recorder.groups for row in rows]
    assert sorted(written) == [(i,) for i in range(50)]
    assert len(recorder.groups) < 50  # grouped: fewer commits than rows
    await group.write((99,))  # alone, it is written at once
    assert recorder.groups[-1] == [(99,)]


async def test_a_failed_commit_fails_its_group_only() -> None:
    recorder = Recorder(fail_first=True)
    recorder.gate.clear()
    group = GroupCommit(recorder.commit)
    first = asyncio.ensure_future(group.write(("a",)))
    await asyncio.sleep(0)  # the first flush has taken ("a",) and waits at the gate
    second = asyncio.ensure_future(group.write(("b",)))
    recorder.gate.set()

    with pytest.raises(OSError, match="disk full"):
        await first
    await second
    assert recorder.groups[-1] == [("b",)]


async def test_a_cancelled_writer_does_not_cancel_the_commit() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    group = GroupCommit(recorder.commit)
    leaving = asyncio.ensure_future(group.write(("gone",)))
    staying = asyncio.ensure_future(group.write(("kept",)))
    await asyncio.sleep(0)
    leaving.cancel()
    recorder.gate.set()

    await staying
    with pytest.raises(asyncio.CancelledError):
        await leaving
    assert [row for rows in recorder.groups for row in rows] == [("gone",), ("kept",)]


async def test_rows_waiting_when_the_flush_is_cancelled_are_failed_not_left_waiting() -> None:
    recorder = Recorder()
    recorder.gate.clear()
    group = GroupCommit(recorder.commit)
    first = asyncio.ensure_future(group.write(("first",)))
    await asyncio.sleep(0)  # the flush holds ("first",) at the gate
    later = asyncio.ensure_future(group.write(("later",)))
    await asyncio.sleep(0)
    flush = group._flush  # the flush task: cancelled as a shutdown cancels it
    assert flush is not None
    flush.cancel()

    for writer in (first, later):
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(writer, 5)
