"""The export queue: ended spans wait in a bounded deque until a background thread sends
them in batches, as the SDK's `BatchSpanProcessor` does (every `schedule_delay`, or as
soon as a batch is full; everything left at shutdown), without its per-span work on the
request path (a fork check, a `ReadableSpan` to build): adding a span is an append.

Spans that never reach the collector are counted (`dropped`, e.g. a Prometheus counter):
a span ended while the queue was full (the collector is slower than the traffic: the
oldest waiting span is pushed out, as the SDK's deque does), one ended after shutdown,
and a batch whose export failed (a dead or refusing collector: the exporter's own
retries, within `export_timeout_s`, came to nothing). No request ever waits on the
collector. The queue is built once tracing is on, in the process that serves (each
worker builds its gateway after the fork)."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger("turnout.telemetry")

T = TypeVar("T")
Dropped = Callable[[int], None]  # told how many spans were lost
Send = Callable[[Sequence[T]], bool]  # exports one batch; False: it failed

THREAD_NAME = "OtelBatchSpanRecordProcessor"  # the SDK processor's thread name


class SpanBatcher(Generic[T]):
    """A bounded queue of ended spans and the thread that sends them with `send`."""

    def __init__(
        self,
        send: Send[T],
        dropped: Dropped,
        *,
        max_queue_size: int,
        schedule_delay_s: float,
        max_export_batch_size: int,
    ) -> None:
        self._send = send
        self._dropped = dropped
        self._max = max_queue_size
        self._batch = min(max_export_batch_size, max_queue_size)
        self._delay = schedule_delay_s
        self._queue: deque[T] = deque(maxlen=max_queue_size)  # appended right, sent from left
        self._awake = threading.Event()  # a batch is full, or shutdown
        self._export_lock = threading.Lock()  # one export at a time: the thread's, a flush's
        self._shutdown = False
        self._thread = threading.Thread(name=THREAD_NAME, target=self._work, daemon=True)
        self._thread.start()

    def add(self, span: T) -> None:
        """An ended span, for export (the request path: an append, and a wake-up when a
        batch is full)."""
        queue = self._queue
        if len(queue) >= self._max or self._shutdown:
            self._dropped(1)  # full: appending pushes the oldest out; shut: never sent
            if self._shutdown:
                return
        queue.append(span)
        if len(queue) >= self._batch and not self._awake.is_set():
            self._awake.set()

    def __len__(self) -> int:
        return len(self._queue)

    def _work(self) -> None:
        while not self._shutdown:
            woken = self._awake.wait(self._delay)
            if self._shutdown:
                break
            self._export(everything=False, at_least_one=not woken)
            self._awake.clear()
        self._export(everything=True, at_least_one=True)

    def _export(self, *, everything: bool, at_least_one: bool) -> None:
        """Send batches: while a whole batch waits, or one batch of what is there
        (`at_least_one`), or all of it (`everything`)."""
        queue = self._queue
        with self._export_lock:
            sent = 0
            while queue and (
                len(queue) >= self._batch or everything or (at_least_one and not sent)
            ):
                batch = [queue.popleft() for _ in range(min(self._batch, len(queue)))]
                sent += 1
                try:
                    ok = self._send(batch)
                except Exception:  # an exporter's bug must not end the thread: counted
                    log.exception("exporting %d spans failed", len(batch))
                    ok = False
                if not ok:
                    self._dropped(len(batch))

    def force_flush(self) -> bool:
        """Export every span queued so far, now (blocking: tests and shutdown only)."""
        if self._shutdown:
            return False
        self._export(everything=True, at_least_one=True)
        return True

    def shutdown(self, timeout_s: float = 30.0) -> None:
        """Stop taking spans, send what is queued, stop the thread (blocking)."""
        if self._shutdown:
            return
        self._shutdown = True
        self._awake.set()
        self._thread.join(timeout_s)
