"""Stopping background tasks at shutdown, when a cancellation may be lost on its way.

`task.cancel()` and a `gather` are not enough to stop a loop for sure: Python 3.11's
`asyncio.wait_for` returns the result of an inner wait that finished as the cancellation
came (the cancellation is gone), and a library may answer one with its own error, which a
loop that logs errors and carries on then survives. Such a task never ends, and the
`gather` that waits for it holds the server's shutdown forever (a batch runner did, in a
test: its worker logged on for minutes after SIGTERM). Here each task still running is
cancelled again every `recancel_s`, and what has not ended after `wait_s` is left behind,
said in the log, so that a shutdown always ends. (Loops should also check a flag of their
own, set before this runs; this is the guarantee.)"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import structlog

log = structlog.get_logger("turnout")


async def cancel_until_done(
    tasks: Iterable[asyncio.Task[object]], what: str, wait_s: float, recancel_s: float = 0.2
) -> None:
    """Cancel `tasks` and wait for them to end, cancelling those still running again every
    `recancel_s`, for at most `wait_s`; `what`: whose tasks, for the log."""
    tasks = set(tasks)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    pending = {task for task in tasks if not task.done()}
    while pending:
        left = deadline - loop.time()
        if left <= 0:
            log.warning("tasks_left_running_at_stop", owner=what, tasks=len(pending))
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(recancel_s, left))
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved here: a failure was the task's own to log
