"""What a client can make a trace hold: captured content is cut at `content_max_chars`
(a prompt of megabytes, a stream of many thousand deltas), a client's model name is cut
and never names a span (a span name per made-up model grows a backend's index); and
whether its `traceparent` decides sampling (`trust_client_sampling`)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from policies.redaction import Redactor
from policies.telemetry.attributes import TRUNCATED, input_messages
from policies.telemetry.settings import TelemetrySettings, trace_export
from policies.telemetry.stream_spans import StreamSeen
from policies.telemetry.tracing import Tracing
from providers.types import Endpoint
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok
from tests.router.telemetry.otlp_receiver import OTLPReceiver
from tests.router.telemetry.traced import exported, one, telemetry
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[[dict[str, Any]], RunningTurnout]


@pytest.fixture
def receiver() -> Iterator[OTLPReceiver]:
    with OTLPReceiver() as running:
        yield running


def test_captured_prompt_and_streamed_answer_are_cut_at_content_max_chars(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, receiver: OTLPReceiver
) -> None:
    upstream.set_default(Ok(text=" ".join(f"word{i}" for i in range(400))))
    settings = telemetry(receiver.endpoint, capture_content=True, content_max_chars=300)
    server = turnout(simple_config({"a": upstream.base_url}, telemetry=settings))
    huge = "q" * 200_000
    with server.client() as client:
        stream = client.chat.completions.create(
            model="m",
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": huge}],
            stream=True,
        )
        answer = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert len(answer) > 2000  # the client got the whole answer: only the span is cut
    attempt = one(exported(server, receiver, 2), "client")
    prompt = attempt.attributes["gen_ai.input.messages"]
    assert len(prompt) < 600
    parts = [p for m in orjson.loads(prompt) for p in m["parts"]]  # still valid JSON
    assert parts[0]["content"] == "be brief"
    # Each message is charged 16 characters of framing besides its text.
    assert parts[1]["content"] == "q" * (300 - 2 * 16 - len("be brief")) + TRUNCATED
    output = attempt.attributes["gen_ai.output.messages"]
    assert len(output) < 600
    text = orjson.loads(output)[0]["parts"][0]["content"]
    assert text == answer[:300] + TRUNCATED


def test_a_client_model_name_is_cut_on_the_span_and_never_names_it(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, receiver: OTLPReceiver
) -> None:
    server = turnout(
        simple_config({"a": upstream.base_url}, telemetry=telemetry(receiver.endpoint))
    )
    made_up = "made-up-" + "x" * 10_000
    with server.http() as http:
        ask = {"model": made_up, "messages": [{"role": "user", "content": "hi"}]}
        assert http.post("/v1/chat/completions", json=ask).status_code == 404
    request = one(exported(server, receiver, 1), "server")
    assert request.name == "chat"
    assert request.attributes["gen_ai.request.model"] == made_up[:256]


def test_a_stream_of_many_deltas_keeps_at_most_the_bound_in_linear_time() -> None:
    seen = StreamSeen(1000)
    for _ in range(200_000):  # quadratic concatenation would copy ~20 GB here
        seen.observe({"choices": [{"index": 0, "delta": {"content": "ab"}}]})
    seen.observe({"choices": [{"index": 1, "delta": {"content": "late"}}]})
    kept = orjson.loads(seen.attributes()["gen_ai.output.messages"])
    assert kept[0]["parts"][0]["content"] == "ab" * 500 + TRUNCATED
    assert len(kept) == 1  # nothing left for a later choice
    assert sum(len(p) for pieces in seen.texts.values() for p in pieces) == 1001


def test_a_body_of_a_million_tiny_parts_is_cut_short() -> None:
    body = {"model": "m", "input": list(range(1_000_000))}  # token ids: each a part
    captured = input_messages(body, 1000)
    assert captured is not None
    assert len(captured) < 2000
    assert orjson.loads(captured)[0]["parts"][-1] == {"type": "text", "content": TRUNCATED}


CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def _sampled(ratio: float, trust: bool, flags: str) -> tuple[bool, str]:
    """Whether a request with a client's `traceparent` (`flags`) is sampled, and the
    trace its server span is in."""
    settings = TelemetrySettings(
        otlp_endpoint="http://127.0.0.1:9", sample_ratio=ratio, trust_client_sampling=trust
    )
    export = trace_export(settings, {})
    assert export is not None
    tracing = Tracing(export)
    try:
        headers = {"traceparent": f"00-{CLIENT_TRACE}-00f067aa0ba902b7-{flags}"}
        spans = tracing.request(Endpoint.CHAT, {}, headers, time.perf_counter(), {}, Redactor())
        return spans.server.recording, f"{spans.server.trace_id:032x}"
    finally:
        asyncio.run(tracing.aclose())


def test_a_client_sampled_flag_decides_unless_the_operator_says_otherwise() -> None:
    # Trusted (the default, as W3C and the SDK's ParentBased): the client's flag decides.
    assert _sampled(0.0, True, "01") == (True, CLIENT_TRACE)
    assert _sampled(1.0, True, "00") == (False, CLIENT_TRACE)
    # Not trusted: the trace goes on, sampled at the ratio whatever the client asked.
    assert _sampled(0.0, False, "01") == (False, CLIENT_TRACE)
    assert _sampled(1.0, False, "00") == (True, CLIENT_TRACE)


def test_an_untrusted_parent_is_not_sampled_by_the_trace_id_it_chose() -> None:
    # TraceIdRatioBased keeps a trace whose id's low 64 bits fall under the ratio's bound:
    # a client choosing ids ending in zeros would be sampled every time.
    settings = TelemetrySettings(
        otlp_endpoint="http://127.0.0.1:9", sample_ratio=0.5, trust_client_sampling=False
    )
    export = trace_export(settings, {})
    assert export is not None
    tracing = Tracing(export)
    try:
        headers = {"traceparent": f"00-{'1' * 16}{'0' * 16}-00f067aa0ba902b7-01"}
        kept = [
            tracing.request(
                Endpoint.CHAT, {}, headers, time.perf_counter(), {}, Redactor()
            ).server.recording
            for _ in range(200)
        ]
    finally:
        asyncio.run(tracing.aclose())
    assert 0 < sum(kept) < 200
