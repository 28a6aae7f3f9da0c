"""OpenTelemetry traces of requests (README, "Traces (OpenTelemetry)"): the `telemetry:`
settings, the tracer a gateway holds while they are on, and the spans of one request
(a server span, a client span per upstream attempt). Nothing here is imported on the
request path while tracing is off."""
