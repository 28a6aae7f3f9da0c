"""Spans recorded for the SDK's span processor at a fraction of the SDK tracer's cost.

The SDK's `Tracer.start_span` builds a `_Span` with locks, bounded and validated
attribute maps and metrics hooks: ~75-95 µs a span on this project's 2 shared cores,
(bench/README.md, "Tracing"): two spans a request alone missed the 0.15 ms budget. Turnout
knows every attribute it sets (strings, ints, floats, lists of strings) and ends each span
once, from one task, so a `RecordedSpan` keeps a plain dict and, when it ends, hands the
SDK's own `ReadableSpan` to the provider's `BatchSpanProcessor`, as `_Span.end` does. What
is exported is what the SDK tracer would export: the provider's resource, its sampler's
decision (`ParentBased(TraceIdRatioBased)`, asked for each request's root span; an
attempt inherits its request's decision, as ParentBased does for a local parent), its id
generator's ids, W3C trace flags and state.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    get_current_span,
)

_UNSET = Status(StatusCode.UNSET)
_SCOPE = InstrumentationScope("turnout")


class RecordedSpan:
    """One span: its context (valid whether sampled or not, for `traceparent`), and while
    sampled its attributes and status, exported when it `end`s."""

    __slots__ = ("_recorder", "attributes", "context", "kind", "name", "parent", "start", "status")

    def __init__(
        self,
        recorder: SpanRecorder | None,
        name: str,
        kind: SpanKind,
        context: SpanContext,
        parent: SpanContext | None,
        start: int,
    ) -> None:
        self._recorder = recorder  # None: not sampled, nothing is recorded
        self.name = name
        self.kind = kind
        self.context = context
        self.parent = parent
        self.start = start
        self.attributes: dict[str, Any] = {}
        self.status = _UNSET

    def is_recording(self) -> bool:
        return self._recorder is not None

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self.attributes.update(attributes)

    def set_status(self, status: Status) -> None:
        self.status = status

    def current(self) -> NonRecordingSpan:
        """The span as OpenTelemetry's context holds it (for propagation only)."""
        return NonRecordingSpan(self.context)

    def end(self) -> None:
        recorder, self._recorder = self._recorder, None  # ended once
        if recorder is not None:
            recorder.export(self)


class SpanRecorder:
    """Starts `RecordedSpan`s with `provider`'s sampler, ids and resource, and hands each
    ended one to `processor` (the provider's batch processor)."""

    def __init__(
        self,
        provider: TracerProvider,
        processor: SpanProcessor,
        roots: TraceIdRatioBased,
        trust_parent: bool = True,
    ) -> None:
        """`roots`: the ratio sampler the provider's ParentBased sampler uses for a span
        without a parent: asked directly for those (the common case), as ParentBased
        would, without building a context for it. `trust_parent` False: a client's
        parent span is continued but its sampled flag is not obeyed (see `root`)."""
        self._trust_parent = trust_parent
        self._sampler = provider.sampler
        self._bound = roots.bound
        self._ids = provider.id_generator
        self._resource = provider.resource
        self._processor = processor

    def root(
        self, name: str, kind: SpanKind, parent: Context | None, start: int | None = None
    ) -> RecordedSpan:
        """A request's span: a child of the remote span in `parent` (a client's
        traceparent), else the root of a new trace; sampled as the sampler decides."""
        remote = get_current_span(parent).get_span_context() if parent is not None else None
        if remote is not None and not remote.is_valid:
            remote = None
        state = None
        if remote is None:
            trace_id = self._ids.generate_trace_id()
            sampled = trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < self._bound
            flags = TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT
            if self._ids.is_trace_id_random():
                flags |= TraceFlags.RANDOM_TRACE_ID
        elif self._trust_parent:
            trace_id = remote.trace_id
            decision = self._sampler.should_sample(parent, trace_id, name, kind)
            sampled = decision.decision is Decision.RECORD_AND_SAMPLE
            flags = TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT
            flags |= remote.trace_flags & TraceFlags.RANDOM_TRACE_ID
            state = decision.trace_state
        else:
            # The client's trace goes on, sampled as a new trace would be: by a fresh random
            # draw, not by its trace id (which the client chose, and could choose under the
            # ratio's bound) nor its flag (every request sampled, or none).
            trace_id = remote.trace_id
            sampled = self._ids.generate_trace_id() & TraceIdRatioBased.TRACE_ID_LIMIT < self._bound
            flags = TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT
            state = remote.trace_state
        context = SpanContext(
            trace_id,
            self._ids.generate_span_id(),
            is_remote=False,
            trace_flags=TraceFlags(flags),
            trace_state=state,
        )
        # Recorded only when sampled: an unsampled span would never be exported anyway.
        recorder = self if sampled else None
        return RecordedSpan(recorder, name, kind, context, remote, start or time.time_ns())

    def child(self, parent: RecordedSpan, name: str, kind: SpanKind) -> RecordedSpan:
        """A span under `parent`, sampled as it is."""
        context = SpanContext(
            parent.context.trace_id,
            self._ids.generate_span_id(),
            is_remote=False,
            trace_flags=parent.context.trace_flags,
            trace_state=parent.context.trace_state,
        )
        recorder = self if parent.is_recording() else None
        return RecordedSpan(recorder, name, kind, context, parent.context, time.time_ns())

    def export(self, span: RecordedSpan) -> None:
        self._processor.on_end(
            ReadableSpan(
                span.name,
                span.context,
                span.parent,
                self._resource,
                span.attributes,
                (),
                (),
                span.kind,
                status=span.status,
                start_time=span.start,
                end_time=time.time_ns(),
                instrumentation_scope=_SCOPE,
            )
        )
