"""Turnout's OTLP wire writer (policies/telemetry/otlp_wire.py) against the exporter
package's own encoder: decoded with opentelemetry-proto, the messages are the same."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from policies.telemetry.otlp_wire import WireEncoder, writable

RESOURCE = Resource.create({"service.name": "turnout", "deployment.environment": "test"})
SCOPE = InstrumentationScope("turnout")
ATTRIBUTES: dict[str, Any] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.max_tokens": 50,
    "gen_ai.request.temperature": 0.7,
    "turnout.cache_hit": True,
    "turnout.negative": -3,
    "turnout.big": 2**62,
    "gen_ai.response.finish_reasons": ["stop", "length"],
    "turnout.translation": ("emulated:n",),
    "gen_ai.input.messages": '[{"role":"user","parts":[{"type":"text","content":"héllo ✓"}]}]',
    "turnout.empty": "",
}


def span(
    name: str,
    kind: SpanKind,
    attributes: dict[str, Any],
    *,
    parent: SpanContext | None = None,
    status: Status | None = None,
    state: TraceState | None = None,
    resource: Resource = RESOURCE,
    events: tuple[Event, ...] = (),
) -> ReadableSpan:
    context = SpanContext(
        0x4BF92F3577B34DA6A3CE929D0E0E4736,
        0x00F067AA0BA902B7 + len(name),
        is_remote=False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=state,
    )
    return ReadableSpan(
        name,
        context,
        parent,
        resource,
        attributes,
        events,
        (),
        kind,
        status=status or Status(StatusCode.UNSET),
        start_time=1_765_000_000_000_000_000,
        end_time=1_765_000_000_123_456_789,
        instrumentation_scope=SCOPE,
    )


def decoded(data: bytes) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(data)


def test_the_writer_writes_what_the_package_encoder_writes() -> None:
    remote = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0xABC, is_remote=True)
    local = SpanContext(0x4BF92F3577B34DA6A3CE929D0E0E4736, 0xDEF, is_remote=False)
    other = Resource.create({"service.name": "other"})
    spans = [
        span("chat m", SpanKind.SERVER, ATTRIBUTES, parent=remote, state=TraceState([("v", "1")])),
        span(
            "chat gpt-4o",
            SpanKind.CLIENT,
            {"error.type": "503"},
            parent=local,
            status=Status(StatusCode.ERROR, "503: upstream unavailable"),
        ),
        span("embeddings m", SpanKind.SERVER, {}, status=Status(StatusCode.OK)),
        span("chat other", SpanKind.INTERNAL, {"a": 1}, resource=other),
    ]
    encoder = WireEncoder()
    ours = decoded(encoder.encode(spans))
    theirs = decoded(encode_spans(spans).SerializePartialToString())
    assert ours == theirs
    assert decoded(encoder.encode(spans)) == theirs  # again, from the pairs it remembers
    assert len(ours.resource_spans) == 2  # grouped by resource, as the package groups them


def test_what_the_writer_does_not_cover_is_left_to_the_package() -> None:
    with_event = span("x", SpanKind.CLIENT, {}, events=(Event("e", {"k": "v"}, 1),))
    assert not writable(with_event)
    with pytest.raises(TypeError):
        WireEncoder().encode([span("x", SpanKind.CLIENT, {"nested": {"a": 1}})])
