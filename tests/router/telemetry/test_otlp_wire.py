"""Turnout's OTLP wire writer (policies/telemetry/otlp_wire.py) against the exporter
package's own encoder: the same spans, as Turnout records them and as the SDK's
`ReadableSpan`s (policies/telemetry/exporter.readable), decoded with opentelemetry-proto,
are the same message."""

from __future__ import annotations

from typing import Any

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource

from policies.telemetry.exporter import SCOPE, readable
from policies.telemetry.otlp_wire import WireEncoder
from policies.telemetry.recorder import CLIENT, SAMPLED, SERVER, RecordedSpan

RESOURCE = Resource.create({"service.name": "turnout", "deployment.environment": "test"})
TRACE = 0x4BF92F3577B34DA6A3CE929D0E0E4736
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
    kind: int,
    attributes: dict[str, Any],
    *,
    parent: tuple[int, bool] = (0, False),
    state: str | None = None,
    later: dict[str, Any] | None = None,
) -> RecordedSpan:
    recorded = RecordedSpan(
        lambda _: None,
        name,
        kind,
        (TRACE, 0x00F067AA0BA902B7 + len(name), SAMPLED, state),
        parent,
        1_765_000_000_000_000_000,
    )
    recorded.set_attributes(attributes)
    if later is not None:  # worked out when written, as the export thread does
        recorded.later.append((dict, (later,)))
    recorded.end()
    recorded.end_time = 1_765_000_000_123_456_789
    return recorded


def decoded(data: bytes) -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest.FromString(data)


def spans() -> list[RecordedSpan]:
    failed = span("chat gpt-4o", CLIENT, {"error.type": "503"}, parent=(0xDEF, False))
    failed.set_error("503: upstream unavailable")
    return [
        span("chat m", SERVER, ATTRIBUTES, parent=(0xABC, True), state="v=1,w=2"),
        failed,
        span("embeddings m", SERVER, {}, later={"turnout.attempts": 1, "error.type": "x"}),
        span("chat n", SERVER, {"error.type": "first"}, later={"error.type": "later wins"}),
    ]


def test_the_writer_writes_what_the_package_encoder_writes() -> None:
    ours_spans, theirs_spans = spans(), spans()
    encoder = WireEncoder(RESOURCE.attributes, SCOPE.name)
    ours = decoded(encoder.encode(ours_spans))
    theirs = decoded(
        encode_spans([readable(s, RESOURCE) for s in theirs_spans]).SerializePartialToString()
    )
    assert ours == theirs
    assert decoded(encoder.encode(spans())) == theirs  # again, from the pairs it remembers
    written = ours.resource_spans[0].scope_spans[0].spans
    assert [s.name for s in written] == ["chat m", "chat gpt-4o", "embeddings m", "chat n"]
    last = {a.key: a.value.string_value for a in written[3].attributes}
    assert last["error.type"] == "later wins"
    assert written[0].trace_state == "v=1,w=2"
    assert written[0].flags & 0x200  # its parent is remote (a client's)


def test_an_attribute_of_a_type_otlp_does_not_hold_is_left_out() -> None:
    odd = span("x", CLIENT, {"nested": {"a": 1}, "none": None, "mixed": ["a", {}], "kept": "yes"})
    written = decoded(WireEncoder(RESOURCE.attributes).encode([odd]))
    attributes = written.resource_spans[0].scope_spans[0].spans[0].attributes
    assert [(a.key, a.value.string_value) for a in attributes] == [("kept", "yes")]
