"""Sending a batch of ended spans to the collector, on the export thread: written as OTLP
protobuf by Turnout's writer (policies/telemetry/otlp_wire.py) and posted by the exporter
package's own HTTP client (`OTLPSpanExporter`'s: the same endpoint, headers, compression,
retries and timeouts), a fraction of the package's CPU. A package version without that
client gets the SDK's `ReadableSpan`s built from ours and exports them itself (`readable`,
also how the tests hold the writer to the package's encoder)."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from policies.telemetry.otlp_wire import WireEncoder
from policies.telemetry.recorder import RecordedSpan

SCOPE = InstrumentationScope("turnout")


class OTLPSender:
    """Exports batches of `RecordedSpan`s of `resource` to `endpoint` (OTLP/HTTP)."""

    def __init__(
        self, endpoint: str, headers: dict[str, str] | None, timeout: float, resource: Resource
    ) -> None:
        self._exporter = OTLPSpanExporter(endpoint=endpoint, headers=headers, timeout=timeout)
        self._client = getattr(self._exporter, "_client", None)  # the package's (1.45)
        self._resource = resource
        self._wire = WireEncoder(resource.attributes, SCOPE.name, resource.schema_url or "")

    def __call__(self, spans: Sequence[RecordedSpan]) -> bool:
        """Sends `spans`; False: the export failed (after the client's own retries)."""
        if self._client is None:
            readables = [readable(span, self._resource) for span in spans]
            return self._exporter.export(readables) is SpanExportResult.SUCCESS
        return bool(self._client.export(self._wire.encode(spans)).success)

    def shutdown(self) -> None:
        self._exporter.shutdown()  # type: ignore[no-untyped-call]


def readable(span: RecordedSpan, resource: Resource) -> ReadableSpan:
    """The SDK's own `ReadableSpan` for `span`: what the SDK tracer would have ended."""
    state = TraceState.from_header([span.state]) if span.state else None
    context = SpanContext(
        span.trace_id,
        span.span_id,
        is_remote=False,
        trace_flags=TraceFlags(span.flags),
        trace_state=state,
    )
    parent = None
    if span.parent_id:
        parent = SpanContext(
            span.trace_id,
            span.parent_id,
            is_remote=span.parent_remote,
            trace_flags=TraceFlags(span.flags),
            trace_state=state,
        )
    return ReadableSpan(
        span.name,
        context,
        parent,
        resource,
        span.resolved(),
        (),
        (),
        SpanKind(span.kind - 1),  # OTLP's kinds count from 1, the API's from 0
        status=Status(StatusCode(span.status_code), span.status_message),
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=SCOPE,
    )
