"""W3C trace context on upstream calls: while a traced attempt runs, its span's ids are
`UPSTREAM_TRACE` (set by policies/telemetry/request_spans.py), and each HTTP call carries
them as `traceparent` (and `tracestate`), so the upstream's own spans join the client's
trace under the attempt; every call an emulation fans out from the attempt (in its task,
or in tasks started from it, which copy the context) carries them too. With tracing off
the variable is never set and nothing is added: a client's own `traceparent` is never
forwarded as it came.

A context variable of Turnout's own rather than OpenTelemetry's current-span context:
reading it is one lookup (OpenTelemetry's costs a context, a span and a span context per
call), and setting it around an attempt builds nothing. No other instrumentation runs in
Turnout's process to read OpenTelemetry's."""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar

# (trace id, span id, trace flags, tracestate header or None) of the attempt running.
TraceIds = tuple[int, int, int, str | None]
UPSTREAM_TRACE: ContextVar[TraceIds | None] = ContextVar("turnout_upstream_trace", default=None)


def with_trace_context(headers: Mapping[str, str]) -> Mapping[str, str]:
    """`headers`, plus the running attempt's `traceparent`/`tracestate` when there is one
    (the same mapping, untouched, when there is none). Written as the TraceContext
    propagator writes them (W3C Trace Context, version 00)."""
    ids = UPSTREAM_TRACE.get()
    if ids is None:
        return headers
    trace_id, span_id, flags, state = ids
    carrier = dict(headers)
    carrier["traceparent"] = f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"
    if state:
        carrier["tracestate"] = state
    return carrier
