"""A deadline on one await at a time, with one timer per request instead of one per await.

`asyncio.timeout` arms and cancels a timer (a heap push and a cancelled handle) and looks up
the current task on every use. The connection guard bounds every ASGI `send` of a response
(`server.send_timeout`), a stream's chunks included, and the body's `receive`s: almost all
of them finish at once, long before any deadline. `AwaitDeadline` instead keeps one timer
per request; when it fires it checks whether the await in progress has passed its
deadline (and cancels that await's task, as `asyncio.timeout` does) or re-arms for it.
Deadlines of one instance must not decrease: the timer may then fire late, never early.
"""

from __future__ import annotations

import asyncio


class AwaitDeadline:
    """Use: `begin(deadline)`; `await ...`; on `CancelledError`, `expired()` says whether
    it was this deadline's (then swallowed: raise the timeout's own error); `end()` in a
    `finally`; `close()` when the request is over."""

    __slots__ = ("_cancelling", "_deadline", "_fired", "_handle", "_loop", "_task")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._handle: asyncio.TimerHandle | None = None
        self._deadline: float | None = None  # of the await in progress, if any
        self._task: asyncio.Task[object] | None = None
        self._cancelling = 0
        self._fired = False

    def begin(self, deadline: float) -> None:
        self._deadline = deadline
        self._task = asyncio.current_task(self._loop)
        if self._handle is None:
            self._handle = self._loop.call_at(deadline, self._check)

    def end(self) -> None:
        self._deadline = None
        self._task = None

    def expired(self) -> bool:
        """Whether the `CancelledError` being handled came from this deadline, and not
        (also) from a cancellation of the task, which must then propagate."""
        if not self._fired:
            return False
        self._fired = False
        task = asyncio.current_task(self._loop)
        return task is not None and task.uncancel() <= self._cancelling

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _check(self) -> None:
        self._handle = None
        deadline, task = self._deadline, self._task
        if deadline is None or task is None:
            return  # nothing in progress: the next `begin` arms the timer again
        if self._loop.time() < deadline:
            self._handle = self._loop.call_at(deadline, self._check)
            return
        self._fired = True
        self._cancelling = task.cancelling()
        task.cancel()
