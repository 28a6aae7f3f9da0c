"""Spans that never reach the collector, counted: a batch whose export failed (a dead or
refusing collector: the exporter's own retries, within `export_timeout_s`, came to
nothing), and a span ended while the queue was full (the collector is slower than the
traffic). Both run on the batch processor's thread or the ending span's; neither ever
waits on the collector for a request."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

Dropped = Callable[[int], None]  # told how many spans were lost (e.g. a Prometheus counter)


class CountingExporter(SpanExporter):
    """An exporter whose failed batches are counted as dropped spans."""

    def __init__(self, exporter: SpanExporter, dropped: Dropped) -> None:
        self._exporter = exporter
        self._dropped = dropped

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._exporter.export(spans)
        except Exception:  # the processor would log and lose the batch: counted first
            self._dropped(len(spans))
            raise
        if result is not SpanExportResult.SUCCESS:
            self._dropped(len(spans))
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)


class CountingBatchProcessor(BatchSpanProcessor):
    """The SDK's batch processor, counting the spans its full queue pushes out (the SDK
    only logs them). The queue is the SDK's own deque, bounded at `max_queue_size`."""

    def __init__(
        self,
        exporter: SpanExporter,
        dropped: Dropped,
        *,
        max_queue_size: int,
        schedule_delay_millis: float,
        max_export_batch_size: int,
        export_timeout_millis: float,
    ) -> None:
        super().__init__(
            exporter,
            max_queue_size=max_queue_size,
            schedule_delay_millis=schedule_delay_millis,
            max_export_batch_size=min(max_export_batch_size, max_queue_size),
            export_timeout_millis=export_timeout_millis,
        )
        self._max_queue = max_queue_size
        self._dropped = dropped
        # The SDK's queue (a private name: where a version lacks it, only failed exports
        # are counted).
        self._queue = getattr(getattr(self, "_batch_processor", None), "_queue", None)

    def on_end(self, span: ReadableSpan) -> None:
        queue = self._queue
        if queue is not None and span.context.trace_flags.sampled and len(queue) >= self._max_queue:
            self._dropped(1)  # appending pushes the oldest span out
        super().on_end(span)
