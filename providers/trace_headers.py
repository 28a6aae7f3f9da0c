"""W3C trace context on upstream calls: while a traced attempt runs, its span is the
current OpenTelemetry context (policies/telemetry/request_spans.py), and each HTTP call
carries it as `traceparent` (and `tracestate`), so the upstream's own spans join the
client's trace under the attempt. With tracing off there is no current span and nothing
is added: a client's own `traceparent` is never forwarded as it came."""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.trace import INVALID_SPAN, get_current_span


def with_trace_context(headers: Mapping[str, str]) -> Mapping[str, str]:
    """`headers`, plus the current span's `traceparent`/`tracestate` when there is one
    (the same mapping, untouched, when there is none: one context lookup). Written as
    the TraceContext propagator writes them (W3C Trace Context, version 00), without its
    generic carrier machinery on every call."""
    span = get_current_span()
    if span is INVALID_SPAN:
        return headers
    context = span.get_span_context()
    if not context.is_valid:
        return headers
    carrier = dict(headers)
    carrier["traceparent"] = (
        f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    )
    if context.trace_state:
        carrier["tracestate"] = context.trace_state.to_header()
    return carrier
