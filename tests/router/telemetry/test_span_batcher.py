"""The export queue (policies/telemetry/batch.py): bounded, every lost span counted (a full
queue's oldest, one ended after shutdown, a batch whose export failed or raised), batches
of at most `max_export_batch_size`, everything left sent at shutdown."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from policies.telemetry.batch import THREAD_NAME, SpanBatcher


class Sink:
    def __init__(self, results: list[bool | None] | None = None) -> None:
        self.batches: list[list[int]] = []
        self._results = list(results or [])

    def __call__(self, batch: Sequence[int]) -> bool:
        self.batches.append(list(batch))
        result = self._results.pop(0) if self._results else True
        if result is None:
            raise RuntimeError("exporter bug")
        return result


def batcher(sink: Sink, lost: list[int], queue: int = 4, batch: int = 3) -> SpanBatcher[int]:
    return SpanBatcher(
        sink,
        lost.append,
        max_queue_size=queue,
        schedule_delay_s=3600.0,  # only a full batch, a flush or shutdown sends
        max_export_batch_size=batch,
    )


def test_a_full_queue_pushes_its_oldest_span_out_and_counts_it() -> None:
    sink, lost = Sink(), []
    spans = batcher(sink, lost, queue=4, batch=10)  # a batch never fills: nothing sent
    for span in range(6):
        spans.add(span)
    assert sum(lost) == 2
    assert spans.force_flush()
    assert sink.batches == [[2, 3, 4, 5]]  # the newest kept, oldest first
    spans.shutdown()


def test_failed_and_raising_exports_are_counted_and_batches_are_bounded() -> None:
    sink, lost = Sink([True, False, None]), []
    spans = batcher(sink, lost, queue=100, batch=3)
    woken = threading.Event()
    original = spans._send

    def send(batch: Sequence[int]) -> bool:
        try:
            return original(batch)
        finally:
            woken.set()

    spans._send = send
    for span in range(3):  # a whole batch wakes the thread
        spans.add(span)
    assert woken.wait(5)
    for span in range(3, 8):
        spans.add(span)
    spans.force_flush()  # [3, 4, 5] fails, [6, 7] raises
    assert sink.batches == [[0, 1, 2], [3, 4, 5], [6, 7]]
    assert sum(lost) == 5
    spans.shutdown()


def test_shutdown_sends_what_is_left_stops_the_thread_and_counts_later_spans() -> None:
    sink, lost = Sink(), []
    spans = batcher(sink, lost, queue=10, batch=5)
    spans.add(1)
    spans.add(2)
    assert any(t.name == THREAD_NAME for t in threading.enumerate())
    spans.shutdown()
    assert sink.batches == [[1, 2]]
    assert not spans._thread.is_alive()
    spans.add(3)
    assert lost == [1]
    assert not spans.force_flush()
    assert sink.batches == [[1, 2]]
