"""The `telemetry:` config section, and where traces go once the standard OTEL_*
environment variables are taken into account. Off unless an OTLP endpoint is set (here or
in the environment): then no tracer, no exporter thread and no span exist at all."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

TRACES_PATH = "/v1/traces"  # OTLP/HTTP's path for traces under a collector's base URL


class TelemetrySettings(BaseModel):
    """`otlp_endpoint`: a collector's OTLP/HTTP base URL (`http://collector:4318`; the
    traces path `/v1/traces` is added unless the URL already ends with it). `headers`: sent
    with each export (a Langfuse key pair, a Tempo tenant); they are secrets, kept out of
    logs by the redactor like a provider's key. `sample_ratio`: the share of new traces
    kept; a client's `traceparent` decides for its own trace (parent-based)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    otlp_endpoint: str | None = None
    service_name: str = "turnout"
    sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    capture_content: bool = False  # prompts and completions on the attempt spans
    # ... at most this many characters of each (the rest cut, marked `…[truncated]`):
    # every sampled span waits in the export queue (`max_queue_size` of them) until sent.
    content_max_chars: int = Field(default=16384, ge=1)
    # A client's `traceparent` sampled flag decides for its trace (W3C and the SDK's
    # ParentBased default: one request can be traced end to end on demand). False: its
    # trace is still continued, but sampled at `sample_ratio` like any other, so a client
    # can neither have all its requests traced (export load, crowding the queue) nor none.
    trust_client_sampling: bool = True
    headers: dict[str, str] = Field(default_factory=dict)
    export_timeout_s: float = Field(default=10.0, gt=0)  # one export, its retries included
    schedule_delay_ms: int = Field(default=5000, ge=1)  # how often the batch is sent
    max_queue_size: int = Field(default=2048, ge=1)  # spans waiting; beyond: dropped, counted
    max_export_batch_size: int = Field(default=512, ge=1)

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("otlp_endpoint: an http:// or https:// URL (OTLP over HTTP)")
        return value


@dataclass(frozen=True, slots=True)
class TraceExport:
    """Where and how traces are sent, the config and the environment resolved."""

    endpoint: str  # the full traces URL
    service_name: str
    sample_ratio: float
    capture_content: bool
    settings: TelemetrySettings


def trace_export(settings: TelemetrySettings, environ: Mapping[str, str]) -> TraceExport | None:
    """The export `settings` and `environ` ask for; None: tracing is off. The config wins
    over the environment field by field; of the environment's endpoints the traces one
    (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, used as it is) wins over the base one
    (`OTEL_EXPORTER_OTLP_ENDPOINT`, `/v1/traces` added), as the OpenTelemetry spec says.
    `OTEL_SDK_DISABLED=true` turns tracing off whatever else is set."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    chosen = settings.model_fields_set
    if settings.otlp_endpoint is not None:
        endpoint = traces_url(settings.otlp_endpoint)
    elif traces := environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        endpoint = traces
    elif base := environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        endpoint = traces_url(base)
    else:
        return None
    service = settings.service_name
    if "service_name" not in chosen:
        service = environ.get("OTEL_SERVICE_NAME", "").strip() or service
    ratio = settings.sample_ratio
    if "sample_ratio" not in chosen:
        ratio = _ratio(environ.get("OTEL_TRACES_SAMPLER_ARG"), ratio)
    return TraceExport(endpoint, service, ratio, settings.capture_content, settings)


def traces_url(base: str) -> str:
    """A collector's base URL with OTLP's traces path added (kept if already there)."""
    trimmed = base.rstrip("/")
    return trimmed if trimmed.endswith(TRACES_PATH) else trimmed + TRACES_PATH


def _ratio(value: str | None, default: float) -> float:
    """`OTEL_TRACES_SAMPLER_ARG` as a ratio; anything but a number in [0, 1] is ignored,
    as the SDK ignores it."""
    try:
        ratio = float(value) if value is not None else default
    except ValueError:
        return default
    return ratio if 0.0 <= ratio <= 1.0 else default
