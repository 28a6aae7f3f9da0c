"""Spans recorded on the request path with as little work there as Python allows.

The SDK's `Tracer.start_span` builds a `_Span` with locks, bounded and validated
attribute maps and metrics hooks (~75-95 µs a span on this project's 2 shared cores), and
even handing the SDK's `BatchSpanProcessor` a `ReadableSpan` of our own costs a
`SpanContext`, a `ReadableSpan`, the processor's fork check and queue (bench/README.md,
"Tracing"). Turnout knows every attribute it sets (strings, ints, floats, bools, lists of
strings) and ends each span once, from one task, so a `RecordedSpan` is a slotted object
of plain ints and strings, and an ended one is appended to the gateway's own bounded
queue (policies/telemetry/batch.py); the export thread writes it as OTLP protobuf
directly (policies/telemetry/otlp_wire.py). Work that only the export needs is left to
that thread: attribute sets a span was given as `later` (a function and its arguments,
e.g. the answer's GenAI attributes) are worked out there.

What is exported is what the SDK would export with `ParentBased(TraceIdRatioBased)`:
a request's root span is sampled by its trace id against the ratio's bound, a client's
`traceparent` decides for its own trace (unless `trust_parent` is off, see `root`), an
attempt inherits its request's decision; ids are random (`random.getrandbits`, as the
SDK's `RandomIdGenerator`), never zero; W3C trace flags and state are kept.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from typing import Any

# OTLP's SpanKind (opentelemetry/proto/trace/v1/trace.proto) and its status codes.
SERVER, CLIENT = 2, 3
UNSET, ERROR = 0, 2
SAMPLED, RANDOM_TRACE_ID = 0x01, 0x02  # W3C trace flags
_ID_LIMIT = (1 << 64) - 1  # TraceIdRatioBased compares the trace id's low 64 bits

Later = tuple[Callable[..., Mapping[str, Any]], tuple[Any, ...]]
Queue = Callable[["RecordedSpan"], None]  # takes an ended span for export


class RecordedSpan:
    """One span: its ids and flags (valid whether sampled or not, for `traceparent`), and
    while `recording` (sampled) its attributes and status, queued for export when it
    `end`s. `parent_id` 0: a trace's root; `parent_remote`: the parent is a client's."""

    __slots__ = (
        "_queue",
        "attributes",
        "end_time",
        "flags",
        "kind",
        "later",
        "name",
        "parent_id",
        "parent_remote",
        "recording",
        "span_id",
        "start_time",
        "state",
        "status_code",
        "status_message",
        "trace_id",
    )

    def __init__(
        self,
        queue: Queue | None,
        name: str,
        kind: int,
        ids: tuple[int, int, int, str | None],
        parent: tuple[int, bool],
        start: int,
    ) -> None:
        self._queue = queue  # None: not sampled, nothing is recorded
        self.recording = queue is not None
        self.name = name
        self.kind = kind
        self.trace_id, self.span_id, self.flags, self.state = ids
        self.parent_id, self.parent_remote = parent
        self.start_time = start
        self.end_time = 0
        self.attributes: dict[str, Any] = {}
        self.later: list[Later] = []
        self.status_code = UNSET
        self.status_message: str | None = None

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes[key] = value

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self.attributes.update(attributes)

    def set_error(self, message: str | None = None) -> None:
        self.status_code, self.status_message = ERROR, message

    def traceparent(self) -> tuple[int, int, int, str | None]:
        """(trace id, span id, flags, tracestate) as an upstream call sends them on."""
        return self.trace_id, self.span_id, self.flags, self.state

    def resolved(self) -> dict[str, Any]:
        """Its attributes with the `later` sets worked out, in the order they were given
        (a later value of a key wins, as `set_attributes` would have it): on the export
        thread."""
        attributes = self.attributes
        for make, args in self.later:
            attributes.update(make(*args))
        self.later = []
        return attributes

    def end(self) -> None:
        queue, self._queue = self._queue, None  # ended once
        if queue is not None:
            self.end_time = time.time_ns()
            queue(self)


class SpanRecorder:
    """Starts `RecordedSpan`s, sampled at `bound` (the ratio's share of 2**64, as
    `TraceIdRatioBased.bound`), and hands each ended sampled one to `queue`."""

    __slots__ = ("_bound", "_queue", "_trust_parent")

    def __init__(self, queue: Queue, bound: int, trust_parent: bool = True) -> None:
        """`trust_parent` False: a client's parent span is continued but its sampled flag
        is not obeyed (see `root`)."""
        self._queue = queue
        self._bound = bound
        self._trust_parent = trust_parent

    def root(
        self,
        name: str,
        kind: int,
        remote: tuple[int, int, int, str | None] | None = None,
        start: int | None = None,
    ) -> RecordedSpan:
        """A request's span: a child of `remote` (a client's valid traceparent: trace id,
        span id, flags, tracestate), else the root of a new trace; sampled as
        `ParentBased(TraceIdRatioBased)` decides."""
        span_id = _new_id(64)
        ids: tuple[int, int, int, str | None]
        if remote is None:
            trace_id = _new_id(128)
            sampled = trace_id & _ID_LIMIT < self._bound
            ids = (trace_id, span_id, (SAMPLED if sampled else 0) | RANDOM_TRACE_ID, None)
            parent = (0, False)
        else:
            trace_id, parent_id, parent_flags, state = remote
            if self._trust_parent:  # ParentBased: a sampled remote parent, always on
                sampled = bool(parent_flags & SAMPLED)
            else:
                # The client's trace goes on, sampled as a new trace would be: by a fresh
                # random draw, not by its trace id (which the client chose, and could
                # choose under the ratio's bound) nor its flag (every request, or none).
                sampled = random.getrandbits(64) < self._bound
            flags = (SAMPLED if sampled else 0) | (parent_flags & RANDOM_TRACE_ID)
            ids = (trace_id, span_id, flags, state)
            parent = (parent_id, True)
        # Recorded only when sampled: an unsampled span would never be exported anyway.
        queue = self._queue if sampled else None
        return RecordedSpan(queue, name, kind, ids, parent, start or time.time_ns())

    def child(self, parent: RecordedSpan, name: str, kind: int) -> RecordedSpan:
        """A span under `parent`, sampled as it is."""
        ids = (parent.trace_id, _new_id(64), parent.flags, parent.state)
        queue = self._queue if parent.recording else None
        return RecordedSpan(queue, name, kind, ids, (parent.span_id, False), time.time_ns())


def _new_id(bits: int) -> int:
    """A random id of `bits` bits, never 0 (the invalid id), as the SDK's generator."""
    value = random.getrandbits(bits)
    while not value:
        value = random.getrandbits(bits)
    return value
