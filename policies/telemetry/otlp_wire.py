"""OTLP's protobuf wire format for the spans Turnout exports, written directly.

The exporter package's encoder builds a protobuf object per span, attribute and value
(`encode_spans`): ~150-250 µs a span on this project's 2 shared cores, on the batch
thread but holding the GIL the event loop needs: at two spans a request that alone was
~0.4 ms a request (bench/README.md, "Tracing"). The message is simple, so it is
written here as bytes (~10x less), and the exporter's own HTTP client (endpoint,
headers, compression, retries and timeouts) sends it. A batch holding what this writer
does not cover (events, links, attributes of another type) is left to the package's
encoder. tests/router/telemetry/test_otlp_wire.py decodes both with opentelemetry-proto
and requires the same message.

Field numbers: opentelemetry/proto/{collector/trace,trace,resource,common}/v1/*.proto.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

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


def _value(value: Any) -> bytes:
    """An `AnyValue`; raises TypeError for a type it does not write."""
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
        return _field(b"\x2a", b"".join(_field(b"\x0a", _value(v)) for v in value))
    raise TypeError(kind.__name__)


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
            inner = _field(b"\x0a", key.encode()) + _field(b"\x12", encoded)
            written = tag + _varint(len(inner)) + inner
            if remember and len(memo) < _MAX_REMEMBERED:
                memo[(pair, kind)] = written
        parts.append(written)
    return b"".join(parts)


def writable(span: ReadableSpan) -> bool:
    """Whether this writer covers `span` (no events or links)."""
    return not span.events and not span.links


def _span(span: ReadableSpan, seen: dict[Any, bytes]) -> bytes:
    context = span.context
    assert context is not None  # a ReadableSpan from a started span
    parts = [b"\x0a\x10", context.trace_id.to_bytes(16, "big"), b"\x12\x08"]
    parts.append(context.span_id.to_bytes(8, "big"))
    if context.trace_state:
        state = ",".join(f"{k}={v}" for k, v in context.trace_state.items())
        parts.append(_field(b"\x1a", state.encode()))
    parent = span.parent
    if parent is not None:
        parts += (b"\x22\x08", parent.span_id.to_bytes(8, "big"))
    parts.append(_field(b"\x2a", span.name.encode()))
    parts += (b"\x30", _varint(span.kind.value + 1))  # OTLP's SpanKind counts from 1
    parts += (b"\x39", _FIXED64.pack(span.start_time or 0))
    parts += (b"\x41", _FIXED64.pack(span.end_time or 0))
    parts.append(_attributes(b"\x4a", span.attributes, seen))
    status = span.status
    inner = b""
    if status.description:
        inner = _field(b"\x12", status.description.encode())
    if status.status_code.value:
        inner += b"\x18" + _varint(status.status_code.value)
    parts.append(_field(_STATUS_TAG, inner))
    flags = _HAS_IS_REMOTE | (_IS_REMOTE if parent is not None and parent.is_remote else 0)
    parts += (_SPAN_FLAGS_TAG, _FIXED32.pack(flags))
    return b"".join(parts)


class WireEncoder:
    """Writes `ExportTraceServiceRequest`s; a resource's and a scope's bytes are written
    once (they are the same object for every span of one tracer provider)."""

    def __init__(self) -> None:
        self._resources: dict[int, tuple[Resource, bytes]] = {}
        self._scopes: dict[int, tuple[InstrumentationScope | None, bytes]] = {}
        self._seen: dict[Any, bytes] = {}  # attribute pairs already written (bounded)

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """The request's bytes; raises TypeError where an attribute is of a type this
        writer does not cover."""
        grouped: dict[int, dict[int, list[bytes]]] = {}
        for span in spans:
            resource = self._resource(span.resource)
            scope = self._scope(span.instrumentation_scope)
            encoded = _field(b"\x12", _span(span, self._seen))
            grouped.setdefault(resource, {}).setdefault(scope, []).append(encoded)
        out: list[bytes] = []
        for resource, scopes in grouped.items():
            resource_object, resource_bytes = self._resources[resource]
            body = [resource_bytes]
            for scope, encoded_spans in scopes.items():
                scope_object, scope_bytes = self._scopes[scope]
                scope_body = scope_bytes + b"".join(encoded_spans)
                if scope_object is not None and scope_object.schema_url:
                    scope_body += _field(b"\x1a", scope_object.schema_url.encode())
                body.append(_field(b"\x12", scope_body))
            if resource_object.schema_url:
                body.append(_field(b"\x1a", resource_object.schema_url.encode()))
            out.append(_field(b"\x0a", b"".join(body)))
        return b"".join(out)

    def _resource(self, resource: Resource) -> int:
        key = id(resource)
        if key not in self._resources:
            written = _field(b"\x0a", _attributes(b"\x0a", resource.attributes))
            self._resources[key] = (resource, written)
        return key

    def _scope(self, scope: InstrumentationScope | None) -> int:
        key = id(scope)
        if key not in self._scopes:
            inner = b""
            if scope is not None:
                inner = _field(b"\x0a", scope.name.encode()) if scope.name else b""
                if scope.version:
                    inner += _field(b"\x12", scope.version.encode())
                inner += _attributes(b"\x1a", scope.attributes)
            self._scopes[key] = (scope, _field(b"\x0a", inner))
        return key
