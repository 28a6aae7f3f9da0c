"""The batch runner stops even when a cancellation is lost on its way (Python 3.11's
`asyncio.wait_for`, a storage client turning one into an answer): a runner that carried on
held `turnout serve`'s shutdown forever, its worker logging on after SIGTERM. And a task
that will not end at all is left behind after `STOP_WAIT_S`, said in the log
(router/task_stop.py)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
import structlog.testing

import router.batches.runner as runner_module
from router.batches.runner import BatchRunner
from router.metrics import Metrics

SETTINGS = SimpleNamespace(
    config=SimpleNamespace(batches=SimpleNamespace(poll_s=0.01, max_in_flight=4))
)


class Swallowing(BatchRunner):
    """Each look answers a cancellation as if the storage call it interrupted returned."""

    looks = 0

    async def look(self) -> None:
        type(self).looks += 1
        try:
            await asyncio.Event().wait()  # a storage call, in progress when the stop comes
        except asyncio.CancelledError:
            return


def runner(kind: type[BatchRunner]) -> BatchRunner:
    storage: Any = None  # never reached: `look` is the test's
    return kind(storage, lambda: SETTINGS, Metrics(process=False))  # type: ignore[arg-type,return-value]


async def test_a_runner_whose_look_swallows_the_cancellation_still_stops() -> None:
    swallowing = runner(Swallowing)
    swallowing.start()
    while Swallowing.looks < 1:  # noqa: ASYNC110 - the loop is running
        await asyncio.sleep(0.01)
    # Waited for without cancelling it: a runner that does not stop fails the test, not hangs it.
    done, _ = await asyncio.wait({asyncio.ensure_future(swallowing.aclose())}, timeout=3)
    assert done, "the runner did not stop"
    assert swallowing._task is not None
    assert swallowing._task.done()


async def test_a_task_that_never_ends_is_left_behind_after_the_stop_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runner_module, "STOP_WAIT_S", 0.3)
    stubborn = runner(Swallowing)
    release = asyncio.Event()

    async def never_ends() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(0.01)
            except asyncio.CancelledError:
                continue

    task = asyncio.get_running_loop().create_task(never_ends())
    await asyncio.sleep(0.02)  # inside its loop
    stubborn._chunks["batch_x"] = {task}
    with structlog.testing.capture_logs() as logs:
        async with asyncio.timeout(3):
            await stubborn.aclose()
    assert not task.done()
    assert [e for e in logs if e["event"] == "tasks_left_running_at_stop"] == [
        {
            "event": "tasks_left_running_at_stop",
            "owner": "batch_runner",
            "tasks": 1,
            "log_level": "warning",
        }
    ]
    release.set()
    await task
