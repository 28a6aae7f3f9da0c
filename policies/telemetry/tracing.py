"""What one gateway holds while tracing is on: the span recorder (policies/telemetry/
recorder.py: a parent-based ratio sampler, random ids), the export queue and its
background thread (batch.py), and the OTLP/HTTP (protobuf) sender (exporter.py). None of
the SDK's tracer, span processor or span objects is on the request path: the same spans
for a fraction of the CPU (bench/README.md, "Tracing"); the SDK gives the resource
(`service.name` and its own `telemetry.sdk.*` attributes) and the W3C `traceparent`
parser, the exporter package the HTTP client.

Never global: several gateways may live in one process (a reload's old and new one, the
tests' many), each with its own config; a gateway builds its `Tracing` from its config, a
reload with the same `telemetry:` keeps it, and closing the gateway flushes and shuts it
down. Spans are queued for a background thread which exports them in batches; a request
never waits on the collector (see policies/telemetry/batch.py for what a dead one
costs)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from policies.redaction import Redactor
from policies.telemetry.attributes import OPERATIONS, request_attributes, request_facts
from policies.telemetry.batch import Dropped, SpanBatcher
from policies.telemetry.exporter import OTLPSender
from policies.telemetry.recorder import SERVER, RecordedSpan, SpanRecorder
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
        resource = Resource.create({"service.name": export.service_name})
        self._sender = OTLPSender(
            export.endpoint, dict(settings.headers) or None, settings.export_timeout_s, resource
        )
        self._batcher = SpanBatcher[RecordedSpan](
            self._sender,
            self._lost,
            max_queue_size=settings.max_queue_size,
            schedule_delay_s=settings.schedule_delay_ms / 1000.0,
            max_export_batch_size=settings.max_export_batch_size,
        )
        bound = round(export.sample_ratio * (1 << 64))  # as TraceIdRatioBased's bound
        self._spans = SpanRecorder(self._batcher.add, bound, settings.trust_client_sampling)
        self._capture = settings.content_max_chars if export.capture_content else 0
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
        remote = _client_parent(headers) if "traceparent" in headers else None
        operation = OPERATIONS.get(endpoint, "chat")
        began = time.time_ns() - int((time.perf_counter() - started) * 1e9)
        span = self._spans.root(operation, SERVER, remote, began)
        if span.recording:
            span.later.append((request_attributes, (operation, *request_facts(body))))
        return RequestSpans(self._spans, span, providers, redactor, self._capture)

    @property
    def dropped(self) -> int:
        """Spans lost so far (failed exports, a full queue)."""
        return self._dropped_count

    def _lost(self, count: int) -> None:
        self._dropped_count += count
        if self._dropped is not None:
            self._dropped(count)

    def force_flush(self) -> bool:
        """Export every span ended so far, now (blocking: tests and shutdown only)."""
        return self._batcher.force_flush()

    async def aclose(self) -> None:
        """Flush what is queued and stop the exporter thread (off the event loop: the
        last export may take up to `export_timeout_s`)."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._shutdown)

    def _shutdown(self) -> None:
        self._batcher.shutdown()
        self._sender.shutdown()


def _client_parent(headers: Mapping[str, str]) -> tuple[int, int, int, str | None] | None:
    """A client's `traceparent` (and `tracestate`), parsed as the W3C propagator parses
    them; None when it is not valid."""
    parent = get_current_span(_PROPAGATOR.extract(headers)).get_span_context()
    if not parent.is_valid:
        return None
    state = parent.trace_state.to_header() if parent.trace_state else None
    return parent.trace_id, parent.span_id, int(parent.trace_flags), state or None
