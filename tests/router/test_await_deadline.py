"""`router.await_deadline`: one timer per request bounds each await in turn, and a
cancellation that is not its own passes through."""

from __future__ import annotations

import asyncio

import pytest

from router.await_deadline import AwaitDeadline


async def _bounded(deadline: AwaitDeadline, seconds: float, wait: float) -> str:
    loop = asyncio.get_running_loop()
    deadline.begin(loop.time() + seconds)
    try:
        await asyncio.sleep(wait)
    except asyncio.CancelledError:
        if not deadline.expired():
            raise
        return "expired"
    finally:
        deadline.end()
    return "done"


async def test_each_await_gets_its_own_deadline_from_one_timer() -> None:
    deadline = AwaitDeadline(asyncio.get_running_loop())
    try:
        # Awaits that finish in time, one after another past the first deadline...
        for _ in range(3):
            assert await _bounded(deadline, 0.05, 0.03) == "done"
        # ...then one that does not.
        assert await _bounded(deadline, 0.05, 5.0) == "expired"
        assert await _bounded(deadline, 0.05, 0.0) == "done"
    finally:
        deadline.close()


async def test_a_cancellation_of_the_task_is_not_taken_for_the_deadline() -> None:
    deadline = AwaitDeadline(asyncio.get_running_loop())
    task = asyncio.create_task(_bounded(deadline, 5.0, 5.0))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline.close()
