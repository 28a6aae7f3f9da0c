"""The batch runner: one per process, draining every active batch together with the
runners of the other replicas (through the shared store's leases).

Each look (every `batches.poll_s`, or at once when a batch is created or cancelled here):
a `validating` batch is checked; an `in_progress` one is expired once its window ended,
else this runner claims chunks of it while it has room (`batches.max_in_flight` lines in
flight in this process, `batches.max_in_flight_per_batch` in one batch) and, once every
chunk is finished, finalizes it; a `cancelling` one has its lines here cancelled and is
finalized once nothing of it runs here (other replicas see the status at their next look).

A chunk's lease is renewed while its lines run. A line is committed the moment it ends
(first write wins), so after a crash the chunk is claimed again once its lease runs out,
and only the lines that were in flight are run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import structlog

from policies.storage.base import BatchRecord, LineResult, StorageUnavailable
from policies.storage.factory import Storage
from router.batches.input_file import split_lines
from router.batches.lifecycle import Lifecycle, missing_input, read_chunk
from router.batches.line import LineRun, crashed_line
from router.gateway import Gateway
from router.metrics import Metrics
from router.task_stop import cancel_until_done

log = structlog.get_logger("turnout.batches")
SWEEP_S = 60.0  # how often expired files (and stored responses) are deleted
SWEEP_RESPONSES = 2000  # at most this many expired responses deleted a sweep
STOP_WAIT_S = 5.0  # the longest a stop waits for its tasks to end (see `aclose`)


@dataclass(slots=True)
class BatchRunner:
    storage: Storage
    gateway: Callable[[], Gateway]  # the one serving now: a reload replaces it
    metrics: Metrics
    holder: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
    )
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _chunks: dict[str, set[asyncio.Task[None]]] = field(default_factory=dict)
    _cancelled: set[str] = field(default_factory=set)
    _lines: asyncio.Semaphore | None = None  # this process's lines in flight
    _per_batch: dict[str, asyncio.Semaphore] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _swept: float = 0.0
    _stopping: bool = False  # set by `aclose`: the loop ends at its next turn

    def start(self) -> None:
        self._lines = asyncio.Semaphore(self.gateway().config.batches.max_in_flight)
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def aclose(self) -> None:
        """Stop: lines in flight are cancelled, not recorded; their chunks' leases run out
        and they are run again (here after a restart, or by another replica).

        The loop also ends at its next turn (`_stopping`), and each task is cancelled
        again until it ends, for at most `STOP_WAIT_S` (router/task_stop.py: a lost
        cancellation held a server's shutdown forever)."""
        self._stopping = True
        self._wake.set()
        tasks: set[asyncio.Task[None]] = {t for chunk in self._chunks.values() for t in chunk}
        if self._task is not None:
            tasks.add(self._task)
        await cancel_until_done(tasks, "batch_runner", STOP_WAIT_S)

    def wake(self) -> None:
        self._wake.set()

    def cancelled(self, batch_id: str) -> None:
        """The batch was cancelled here: no new line starts, those in flight are cancelled."""
        self._cancelled.add(batch_id)
        for task in self._chunks.get(batch_id, ()):
            task.cancel()
        self.wake()

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()  # a wake during the look below brings the next one at once
            try:
                await self.look()
            except StorageUnavailable as exc:
                log.warning("batch_storage_unavailable", error=str(exc))
            except Exception as exc:  # a bug: logged, and the runner carries on
                log.error("batch_runner_error", exc_info=exc)
            # asyncio.timeout, not wait_for: it never takes a cancellation for a timeout.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.gateway().config.batches.poll_s):
                    await self._wake.wait()

    async def look(self) -> None:
        """One pass over the active batches."""
        now = time.time()
        if now - self._swept >= SWEEP_S:
            self._swept = now
            await self._sweep(now)
        active = await self.storage.meta.active_batches()
        self._forget(set(active))
        for batch_id in active:
            batch = await self.storage.meta.get_batch(batch_id)
            if batch is None:
                continue
            try:
                await self._attend(batch, time.time())
            except StorageUnavailable:
                raise  # every batch's problem: the look ends
            except Exception as exc:  # a bug in one batch must not stall those after it
                log.error("batch_attend_error", batch=batch_id, exc_info=exc)

    def _forget(self, active: set[str]) -> None:
        """Drop what this runner kept of batches that are over."""
        for kept in (self._chunks, self._per_batch):
            for batch_id in [b for b in kept if b not in active and not self._chunks.get(b)]:
                del kept[batch_id]
        self._cancelled &= active

    async def _attend(self, batch: BatchRecord, now: float) -> None:
        meta, settings = self.storage.meta, self.gateway().config.batches
        step = f"{batch.status}:{batch.id}"
        if batch.status == "validating":
            # A task of its own: a large input is read whole to check it, and the other
            # batches go on meanwhile; cancelling the batch cancels the check.
            if not self._chunks.get(batch.id) and await meta.acquire(
                step, self.holder, now, settings.lease_s
            ):
                self._spawn(batch.id, self._validate(batch, step))
        elif batch.status == "in_progress" and now >= batch.expires_at:
            self.cancelled(batch.id)  # nothing more starts here
            if not self._chunks.get(batch.id) and await meta.acquire(
                f"expire:{batch.id}", self.holder, now, settings.lease_s
            ):
                await self._lifecycle().expire(batch)
        elif batch.status == "in_progress":
            await self._claim(batch, now)
        elif batch.status == "cancelling":
            self.cancelled(batch.id)
            settled = now - (batch.cancelling_at or 0) >= 2 * settings.poll_s
            if (
                settled
                and not self._chunks.get(batch.id)
                and await meta.acquire(step, self.holder, now, settings.lease_s)
            ):
                await self._lifecycle().finalize(batch, "cancelled", ["cancelling"])
        elif batch.status == "finalizing" and await meta.acquire(
            step, self.holder, now, settings.lease_s
        ):
            await self._lifecycle().finalize(batch, "completed", ["finalizing"])

    def _spawn(self, batch_id: str, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` for the batch as a task this runner tracks (and cancels with it)."""
        running = self._chunks.setdefault(batch_id, set())
        task = asyncio.get_running_loop().create_task(work)
        running.add(task)
        task.add_done_callback(running.discard)

    async def _validate(self, batch: BatchRecord, step: str) -> None:
        try:
            await self._lifecycle().validate(batch)
        except StorageUnavailable as exc:  # the lease runs out; the check is done again
            log.warning("batch_validation_interrupted", batch=batch.id, error=str(exc))
        except Exception as exc:  # a bug: logged; the lease runs out and it is tried again
            log.error("batch_validation_error", batch=batch.id, exc_info=exc)
        finally:
            with contextlib.suppress(StorageUnavailable):
                await self.storage.meta.release(step, self.holder)
        self.wake()

    async def _claim(self, batch: BatchRecord, now: float) -> None:
        """Claim chunks while this process has room; finalize once all are finished."""
        settings = self.gateway().config.batches
        running = self._chunks.setdefault(batch.id, set())
        # One chunk more than the lines allowed in flight fill: its lines start as the
        # previous chunk's last ones finish, instead of after all of them.
        per_batch = -(-settings.max_in_flight_per_batch // batch.chunk_lines) + 1
        overall = -(-settings.max_in_flight // batch.chunk_lines) + 1
        claimed: int | None = None
        while len(running) < per_batch and self._running_chunks() < overall:
            claimed = await self.storage.meta.claim_chunk(
                batch.id, batch.chunks, self.holder, now, settings.lease_s
            )
            if claimed is None:
                break
            self._spawn(batch.id, self._run_chunk(batch, claimed))
        if running or claimed is not None:
            return
        if await self.storage.meta.chunks_finished(batch.id) >= batch.chunks:
            finalizing = batch.model_copy(
                update={"status": "finalizing", "finalizing_at": int(time.time())}
            )
            if await self.storage.meta.update_batch(finalizing, ["in_progress"]):
                self.metrics.batch_status("finalizing")
                self.wake()

    def _running_chunks(self) -> int:
        return sum(len(tasks) for tasks in self._chunks.values())

    async def _run_chunk(self, batch: BatchRecord, chunk: int) -> None:
        meta = self.storage.meta
        start = chunk * batch.chunk_lines
        stop = min(start + batch.chunk_lines, batch.total)
        renewal = asyncio.get_running_loop().create_task(self._renew(batch, chunk))
        finished = False
        try:
            done = await meta.recorded_lines(batch.id, start, stop)
            raw = await read_chunk(self.storage, batch, chunk)
            runner = LineRun(batch, self.gateway, self.metrics, time.time, self.storage)
            async with asyncio.TaskGroup() as group:
                for line, item in enumerate(split_lines(raw), start):
                    if line in done:
                        continue
                    if batch.id in self._cancelled or renewal.done():
                        break  # cancelled, or the lease was lost to another runner
                    await self._slot(batch)
                    group.create_task(self._run_line(runner, batch, line, item))
            if len(await meta.recorded_lines(batch.id, start, stop)) == stop - start:
                await meta.finish_chunk(batch.id, chunk, self.holder)
                finished = True
                self.wake()
        except StorageUnavailable as exc:  # the lease runs out; the chunk is run again
            log.warning("batch_chunk_interrupted", batch=batch.id, chunk=chunk, error=str(exc))
        except FileNotFoundError:
            await self._input_gone(batch)
        finally:
            renewal.cancel()
            if not finished and not renewal.done():
                await self._give_back(batch, chunk)

    async def _input_gone(self, batch: BatchRecord) -> None:
        """The input file is gone (deleted in a race with the batch's creation, or from
        the store behind Turnout's back): no line of it can run any more. The batch is
        cancelled, keeping what finished, rather than its chunks tried again and again
        until it expires."""
        log.warning("batch_input_missing", batch=batch.id)
        self._cancelled.add(batch.id)  # this runner's other chunks of it stop too
        cancelling = batch.model_copy(
            update={
                "status": "cancelling",
                "cancelling_at": int(time.time()),
                "errors": [missing_input(batch)],
            }
        )
        if await self.storage.meta.update_batch(cancelling, ["in_progress"]):
            self.metrics.batch_status("cancelling")
            self.wake()

    async def _give_back(self, batch: BatchRecord, chunk: int) -> None:
        """A chunk left unfinished (this runner stops, or the batch is cancelled): its lease
        ends now, so a restarted runner, or another replica, takes it up at once rather
        than after `batches.lease_s`."""
        with contextlib.suppress(StorageUnavailable):
            await self.storage.meta.renew_chunk(batch.id, chunk, self.holder, time.time(), 0.0)

    async def _slot(self, batch: BatchRecord) -> None:
        """Wait for room for one more line: in this process, and in this batch."""
        assert self._lines is not None
        per_batch = self._per_batch.get(batch.id)
        if per_batch is None:
            limit = self.gateway().config.batches.max_in_flight_per_batch
            per_batch = self._per_batch[batch.id] = asyncio.Semaphore(limit)
        await self._lines.acquire()
        try:
            await per_batch.acquire()
        except BaseException:
            self._lines.release()
            raise

    async def _run_line(self, runner: LineRun, batch: BatchRecord, line: int, raw: bytes) -> None:
        assert self._lines is not None
        self.metrics.batch_lines_in_flight(1)
        try:
            try:
                result = await runner.run(line, raw)
            except Exception as exc:  # a bug: logged, and the line answered as a 500
                log.error("batch_line_error", batch=batch.id, line=line, exc_info=exc)
                result = crashed_line(batch.id, line, raw)
            try:
                await self.storage.meta.record_line(batch.id, result)
            except StorageUnavailable as exc:  # not recorded: run again with its chunk
                log.warning("batch_line_not_recorded", batch=batch.id, line=line, error=str(exc))
                return
            self.metrics.batch_line(_outcome(result))
        finally:
            self.metrics.batch_lines_in_flight(-1)
            self._lines.release()
            self._per_batch[batch.id].release()

    async def _renew(self, batch: BatchRecord, chunk: int) -> None:
        """Keep the chunk's lease while its lines run; return once it is lost."""
        lease_s = self.gateway().config.batches.lease_s
        while True:
            await asyncio.sleep(lease_s / 3)
            try:
                held = await self.storage.meta.renew_chunk(
                    batch.id, chunk, self.holder, time.time(), lease_s
                )
            except StorageUnavailable:
                continue  # the lease may outlive a short outage
            if not held:
                log.warning("batch_chunk_lease_lost", batch=batch.id, chunk=chunk)
                return

    async def _sweep(self, now: float) -> None:
        """Delete files whose `expires_after` has passed, except the input of a batch not
        yet ended (`DELETE /v1/files` refuses it too): its runners read it chunk by chunk
        until the batch ends, and without it the batch could neither run nor expire.
        Stored responses past their `expires_at` too (already unreadable; this frees the
        space): pages of 100 while full, up to `SWEEP_RESPONSES` a sweep, as a busy
        replica stores far more responses a minute than it uploads files."""
        for _ in range(0, SWEEP_RESPONSES, 100):
            ids = await self.storage.meta.expired_responses(now, 100)
            for response_id in ids:
                await self.storage.meta.delete_response(response_id)
            if len(ids) < 100:
                break
        expired = await self.storage.meta.expired_files(now, 100)
        if not expired:
            return
        inputs: set[str] = set()
        for batch_id in await self.storage.meta.active_batches():
            batch = await self.storage.meta.get_batch(batch_id)
            if batch is not None:
                inputs.add(batch.input_file_id)
        for record in expired:
            if record.id in inputs:
                continue  # swept once its batch has ended
            await self.storage.blobs.delete(record.id)
            await self.storage.meta.delete_file(record.id)

    def _lifecycle(self) -> Lifecycle:
        config = self.gateway().config
        return Lifecycle(
            self.storage,
            self.holder,
            config.batches,
            config.server.max_body_bytes,
            self.metrics.batch_status,
        )


def _outcome(result: LineResult) -> str:
    if result.ok:
        return "ok"
    return "expired" if b'"batch_expired"' in result.data[:400] else "error"
