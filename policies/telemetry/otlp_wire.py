"""OTLP's protobuf wire format for the spans Turnout exports, written directly.

The exporter package's encoder builds a protobuf object per span, attribute and value
(`encode_spans`): ~150-250 µs a span on this project's 2 shared cores, on the batch
thread but holding the GIL the event loop needs: at two spans a request that alone was
~0.4 ms a request (bench/README.md, "Tracing"). The message is simple, so it is written
here as bytes (~10x less), straight from Turnout's `RecordedSpan`s (no SDK `ReadableSpan`
is built), and the exporter package's own HTTP client (endpoint, headers, compression,
retries and timeouts) sends it (policies/telemetry/exporter.py). An attribute of a type
OTLP does not hold is left out, as the SDK leaves it out.
tests/router/telemetry/test_otlp_wire.py decodes the bytes with opentelemetry-proto and
requires the message the package's encoder writes for the same spans.

Field numbers: opentelemetry/proto/{collector/trace,trace,resource,common}/v1/*.proto.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from policies.telemetry.recorder import RecordedSpan

_I64 = (1 << 64) - 1
_DOUBLE = struct.Struct("<d")
_FIXED64 = struct.Struct("<Q")
_FIXED32 = struct.Struct("<I")
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # SpanFlags
_SPAN_FLAGS_TAG = b"\x85\x01"  # field 16, fixed32
_STATUS_TAG = b"\x7a"  # field 15, length-delimited


_SMALL = tuple(bytes((i,)) for i in range(0x80))


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: its tag, its length, its bytes."""
    return tag + _varint(len(payload)) + payload


def _value(value: Any) -> bytes | None:
    """An `AnyValue`; None for a type OTLP attributes do not hold (a mapping, None, an
    object), which is then left out, as the SDK drops an invalid attribute."""
    kind = type(value)
    if kind is str:
        return _field(b"\x0a", value.encode())
    if kind is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if kind is int:
        return b"\x18" + _varint(value & _I64)
    if kind is float:
        return b"\x21" + _DOUBLE.pack(value)
    if kind is list or kind is tuple:
        items = [_value(v) for v in value]
        if None in items:
            return None
        return _field(b"\x2a", b"".join(_field(b"\x0a", v) for v in items if v is not None))
    return None


_REPEATED = (str, bool, int)  # values worth remembering: names, flags, small counts
_MAX_REMEMBERED = 4096


def _attributes(
    tag: bytes, attributes: Mapping[str, Any] | None, seen: dict[Any, bytes] | None = None
) -> bytes:
    """Each attribute as a `KeyValue` field `tag`. `seen`: pairs already written (most
    recur on every span: the operation, the deployment, the cache result, a status);
    pairs are remembered up to a bound, then only written."""
    if not attributes:
        return b""
    memo: dict[Any, bytes] = {} if seen is None else seen
    parts: list[bytes] = []
    for pair in attributes.items():
        key, value = pair
        kind = type(value)
        remember = kind in _REPEATED
        written = memo.get((pair, kind)) if remember else None  # True and 1 kept apart
        if written is None:
            encoded = _value(value)
            if encoded is None:
                continue
            inner = _field(b"\x0a", key.encode()) + _field(b"\x12", encoded)
            written = tag + _varint(len(inner)) + inner
            if remember and len(memo) < _MAX_REMEMBERED:
                memo[(pair, kind)] = written
        parts.append(written)
    return b"".join(parts)


def _span(span: RecordedSpan, attributes: Mapping[str, Any], seen: dict[Any, bytes]) -> bytes:
    parts = [b"\x0a\x10", span.trace_id.to_bytes(16, "big"), b"\x12\x08"]
    parts.append(span.span_id.to_bytes(8, "big"))
    if span.state:
        parts.append(_field(b"\x1a", span.state.encode()))
    if span.parent_id:
        parts += (b"\x22\x08", span.parent_id.to_bytes(8, "big"))
    parts.append(_field(b"\x2a", span.name.encode()))
    parts += (b"\x30", _SMALL[span.kind])
    parts += (b"\x39", _FIXED64.pack(span.start_time))
    parts += (b"\x41", _FIXED64.pack(span.end_time))
    parts.append(_attributes(b"\x4a", attributes, seen))
    inner = b""
    if span.status_message:
        inner = _field(b"\x12", span.status_message.encode())
    if span.status_code:
        inner += b"\x18" + _SMALL[span.status_code]
    parts.append(_field(_STATUS_TAG, inner))
    flags = _HAS_IS_REMOTE | (_IS_REMOTE if span.parent_remote else 0)
    parts += (_SPAN_FLAGS_TAG, _FIXED32.pack(flags))
    return b"".join(parts)


class WireEncoder:
    """Writes `ExportTraceServiceRequest`s of one resource's spans (a gateway's: its
    `service.name` and the SDK's resource attributes) under one instrumentation scope
    (`turnout`); their bytes are written once."""

    def __init__(
        self,
        resource: Mapping[str, Any],
        scope: str = "turnout",
        resource_schema_url: str = "",
    ) -> None:
        self._resource = _field(b"\x0a", _attributes(b"\x0a", resource))
        self._scope = _field(b"\x0a", _field(b"\x0a", scope.encode()) if scope else b"")
        self._schema = _field(b"\x1a", resource_schema_url.encode()) if resource_schema_url else b""
        self._seen: dict[Any, bytes] = {}  # attribute pairs already written (bounded)

    def encode(self, spans: Sequence[RecordedSpan]) -> bytes:
        """The request's bytes; each span's `later` attributes are worked out here."""
        seen = self._seen
        body = [self._scope]
        for span in spans:
            body.append(_field(b"\x12", _span(span, span.resolved(), seen)))
        scope_spans = _field(b"\x12", b"".join(body))
        return _field(b"\x0a", self._resource + scope_spans + self._schema)
