"""Tracing off costs nothing (no exporter thread, no header), tracing to a dead collector
costs only the dropped spans (counted in /metrics), and the standard OTEL_* environment
variables turn it on."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from policies.telemetry.settings import TelemetrySettings
from providers.trace_headers import UPSTREAM_TRACE, with_trace_context
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok
from tests.router.telemetry.otlp_receiver import OTLPReceiver
from tests.router.telemetry.traced import exported, one, telemetry
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[[dict[str, Any]], RunningTurnout]
OTEL_ENV = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_SDK_DISABLED",
)
CLIENT_PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture(autouse=True)
def no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in OTEL_ENV:
        monkeypatch.delenv(name, raising=False)


def exporter_threads() -> set[int]:
    return {t.ident or 0 for t in threading.enumerate() if t.name.startswith("OtelBatch")}


def dropped_spans(server: RunningTurnout) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    lines = [x for x in text.splitlines() if x.startswith("turnout_trace_spans_dropped_total ")]
    return float(lines[0].split()[-1]) if lines else 0.0


def test_tracing_off_starts_no_exporter_thread_and_sends_no_traceparent(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Ok(text="hi"))
    before = exporter_threads()
    server = turnout(simple_config({"a": upstream.base_url}))
    with server.client(default_headers={"traceparent": CLIENT_PARENT}) as client:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert server.app.state.gateway.tracing is None
    assert exporter_threads() <= before  # none started by this Turnout
    # A client's own traceparent is not passed on: Turnout is no part of its trace.
    assert "traceparent" not in upstream.requests[-1].headers
    assert dropped_spans(server) == 0.0


def test_with_no_current_span_the_upstream_headers_are_left_alone() -> None:
    headers = {"authorization": "Bearer x"}
    assert with_trace_context(headers) is headers


def test_a_dead_collector_costs_requests_nothing_and_its_spans_are_counted_dropped(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Ok(text="hi"))
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    server = turnout(simple_config({"a": upstream.base_url}, telemetry=telemetry(dead)))
    with server.client() as client:
        for _ in range(2):
            answer = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}]
            )
            assert answer.choices[0].message.content == "hi"
    tracing = server.app.state.gateway.tracing
    deadline = time.monotonic() + 5
    while dropped_spans(server) < 4 and time.monotonic() < deadline:
        tracing.force_flush()
    assert dropped_spans(server) == 4  # a server and a client span per request
    assert tracing.dropped == 4


def test_the_standard_environment_variables_turn_tracing_on(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    upstream.set_default(Ok(text="hi"))
    with OTLPReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway-7")
        server = turnout(simple_config({"a": upstream.base_url}))
        with server.client() as client:
            client.completions.create(model="m", prompt="once upon")
        spans = exported(server, receiver, 2)
    request = one(spans, "server")
    assert request.name == "text_completion m"
    assert request.resource["service.name"] == "gateway-7"
    assert one(spans, "client").attributes["gen_ai.operation.name"] == "text_completion"


@pytest.fixture
def sampled_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")


def test_a_trace_sampled_out_exports_nothing_yet_still_propagates(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, sampled_out: None
) -> None:
    upstream.set_default(Ok(text="hi"))
    with OTLPReceiver() as receiver:
        server = turnout(
            simple_config({"a": upstream.base_url}, telemetry=telemetry(receiver.endpoint))
        )
        with server.client() as client:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
        server.app.state.gateway.tracing.force_flush()
        assert receiver.spans == []
    _version, _, _, flags = upstream.requests[-1].headers["traceparent"].split("-")
    assert int(flags, 16) & 1 == 0  # not sampled: the upstream is told so


def test_the_config_wins_over_the_environment_field_by_field() -> None:
    from policies.telemetry.settings import trace_export

    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4318",
        "OTEL_SERVICE_NAME": "from-env",
        "OTEL_TRACES_SAMPLER_ARG": "0.25",
    }
    assert trace_export(TelemetrySettings(), {}) is None
    from_env = trace_export(TelemetrySettings(), env)
    assert from_env is not None
    assert (from_env.endpoint, from_env.service_name, from_env.sample_ratio) == (
        "http://env:4318/v1/traces",
        "from-env",
        0.25,
    )
    traces_env = {**env, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:4318/custom"}
    assert trace_export(TelemetrySettings(), traces_env).endpoint == "http://t:4318/custom"  # type: ignore[union-attr]
    own = TelemetrySettings(otlp_endpoint="http://cfg:4318/", service_name="mine", sample_ratio=1)
    chosen = trace_export(own, env)
    assert chosen is not None
    assert (chosen.endpoint, chosen.service_name, chosen.sample_ratio) == (
        "http://cfg:4318/v1/traces",
        "mine",
        1.0,
    )
    assert trace_export(own, {"OTEL_SDK_DISABLED": "true"}) is None
    bad_ratio = trace_export(TelemetrySettings(), {**env, "OTEL_TRACES_SAMPLER_ARG": "2"})
    assert bad_ratio is not None
    assert bad_ratio.sample_ratio == 1.0


def test_a_reload_keeps_the_tracer_unless_the_telemetry_section_changed() -> None:
    from policies.telemetry.build import build_tracing

    settings = TelemetrySettings(otlp_endpoint="http://127.0.0.1:9/", schedule_delay_ms=50)
    first = build_tracing(settings, {}, None, None)
    assert first is not None
    try:
        assert build_tracing(settings, {}, first, None) is first
        changed = settings.model_copy(update={"sample_ratio": 0.5})
        second = build_tracing(changed, {}, first, None)
        assert second is not None
        assert second is not first
        second._shutdown()
        assert build_tracing(TelemetrySettings(), {}, first, None) is None  # turned off
    finally:
        first._shutdown()


@pytest.mark.parametrize(("flags", "state"), [(0, "vendor=opaque"), (1, None), (3, "a=1,b=2")])
def test_the_upstream_headers_are_those_the_w3c_propagator_writes(
    flags: int, state: str | None
) -> None:
    from opentelemetry import context
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, set_span_in_context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    from opentelemetry.trace.span import TraceState

    trace_id, span_id = 0x4BF92F3577B34DA6A3CE929D0E0E4736, 0x00F067AA0BA902B7
    span = SpanContext(
        trace_id,
        span_id,
        is_remote=False,
        trace_flags=TraceFlags(flags),
        trace_state=TraceState.from_header([state]) if state else None,
    )
    token = context.attach(set_span_in_context(NonRecordingSpan(span)))
    try:
        theirs = {"authorization": "Bearer x"}
        TraceContextTextMapPropagator().inject(theirs)
    finally:
        context.detach(token)
    ours_token = UPSTREAM_TRACE.set((trace_id, span_id, flags, state))
    try:
        ours = with_trace_context({"authorization": "Bearer x"})
    finally:
        UPSTREAM_TRACE.reset(ours_token)
    assert ours == theirs
