"""The tracer one gateway holds while tracing is on: the SDK's TracerProvider with a
parent-based ratio sampler, its BatchSpanProcessor and the OTLP/HTTP (protobuf) exporter.
Spans are recorded by `recorder.SpanRecorder` and written by `otlp_wire` rather than by
the SDK's tracer and the package's encoder: the same spans for a fraction of the CPU
(bench/README.md, "Tracing").

Never the global tracer provider: several gateways may live in one process (a reload's
old and new one, the tests' many), each with its own config; a gateway builds its
`Tracing` from its config, a reload with the same `telemetry:` keeps it, and closing the
gateway flushes and shuts it down. Spans are queued for a background thread which exports
them in batches; a request never waits on the collector (see policies/telemetry/dropped.py
for what a dead one costs)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from policies.redaction import Redactor
from policies.telemetry.attributes import OPERATIONS, request_attributes
from policies.telemetry.dropped import CountingBatchProcessor, CountingExporter, Dropped
from policies.telemetry.exporter import WireSpanExporter
from policies.telemetry.recorder import SpanRecorder
from policies.telemetry.request_spans import RequestSpans
from policies.telemetry.settings import TraceExport
from providers.types import Endpoint

_PROPAGATOR = TraceContextTextMapPropagator()  # W3C traceparent and tracestate; stateless


class Tracing:
    """Spans for a gateway's requests (`request`), exported to `export.endpoint`;
    `dropped` is told of spans lost."""

    def __init__(self, export: TraceExport, dropped: Dropped | None = None) -> None:
        settings = export.settings
        self.export = export
        self._dropped_count = 0
        self._dropped = dropped
        exporter = WireSpanExporter(
            export.endpoint, dict(settings.headers) or None, settings.export_timeout_s
        )
        self._processor = CountingBatchProcessor(
            CountingExporter(exporter, self._lost),
            self._lost,
            max_queue_size=settings.max_queue_size,
            schedule_delay_millis=settings.schedule_delay_ms,
            max_export_batch_size=settings.max_export_batch_size,
            export_timeout_millis=settings.export_timeout_s * 1000.0,
        )
        roots = TraceIdRatioBased(export.sample_ratio)
        self._provider = TracerProvider(
            sampler=ParentBased(roots),
            resource=Resource.create({"service.name": export.service_name}),
            shutdown_on_exit=False,  # the gateway shuts it down, flushing what is queued
        )
        self._provider.add_span_processor(self._processor)  # flushed and shut down with it
        self._spans = SpanRecorder(
            self._provider, self._processor, roots, settings.trust_client_sampling
        )
        self._closed = False

    def request(
        self,
        endpoint: Endpoint,
        body: Mapping[str, object],
        headers: Mapping[str, str],
        started: float,
        providers: Mapping[str, object],
        redactor: Redactor,
    ) -> RequestSpans:
        """The server span of a client request to `endpoint` asking `body`, begun at
        `started` (perf_counter time: the record's start, before its body was read). A
        client's `traceparent` in `headers` makes it a child in the client's trace.
        Named by its operation alone until it ends (`RequestSpans.finish` adds the model it
        was routed to): a client's model name is whatever it sent, and a span name per
        made-up model would grow a trace backend's index of operation names without bound.
        `providers`: the config's, by name (their `kind` names `gen_ai.provider.name`);
        `redactor` masks upstream error text put on spans."""
        parent: Context | None = None
        if "traceparent" in headers:
            parent = _PROPAGATOR.extract(headers)
        operation = OPERATIONS.get(endpoint, "chat")
        began = time.time_ns() - int((time.perf_counter() - started) * 1e9)
        span = self._spans.root(operation, SpanKind.SERVER, parent, began)
        if span.is_recording():
            span.set_attributes(request_attributes(operation, body))
        export = self.export
        capture = export.settings.content_max_chars if export.capture_content else 0
        return RequestSpans(self._spans, span, providers, redactor, capture)

    @property
    def dropped(self) -> int:
        """Spans lost so far (failed exports, a full queue)."""
        return self._dropped_count

    def _lost(self, count: int) -> None:
        self._dropped_count += count
        if self._dropped is not None:
            self._dropped(count)

    def force_flush(self, timeout_ms: int = 30_000) -> bool:
        """Export every span ended so far, now (blocking: tests and shutdown only)."""
        return self._provider.force_flush(timeout_ms)

    async def aclose(self) -> None:
        """Flush what is queued and stop the exporter thread (off the event loop: the
        last export may take up to `export_timeout_s`)."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._provider.shutdown)
