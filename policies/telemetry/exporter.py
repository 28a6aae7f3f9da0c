"""The OTLP/HTTP span exporter with Turnout's wire writer (policies/telemetry/otlp_wire.py)
in place of the package's per-object encoder: the same endpoint, headers, compression,
retries and timeouts (the package's HTTP client sends the bytes), a fraction of the CPU.
Whatever the writer does not cover, or a package version without that client, is exported
by the package itself, unchanged."""

from __future__ import annotations

from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from policies.telemetry.otlp_wire import WireEncoder, writable


class WireSpanExporter(OTLPSpanExporter):
    def __init__(self, endpoint: str, headers: dict[str, str] | None, timeout: float) -> None:
        super().__init__(endpoint=endpoint, headers=headers, timeout=timeout)
        self._wire = WireEncoder()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        client = getattr(self, "_client", None)  # the package's HTTP client (1.45)
        if client is None or getattr(self, "_shutdown", True) or not all(map(writable, spans)):
            return super().export(spans)
        try:
            data = self._wire.encode(spans)
        except TypeError:  # an attribute of a type the writer does not cover
            return super().export(spans)
        result = client.export(data)
        return SpanExportResult.SUCCESS if result.success else SpanExportResult.FAILURE
