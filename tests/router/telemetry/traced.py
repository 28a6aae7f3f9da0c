"""What the trace tests share: a config with tracing to a receiver, and the spans a
running Turnout exported, flushed through its gateway."""

from __future__ import annotations

import time
from typing import Any

from tests.router.telemetry.otlp_receiver import OTLPReceiver, ReceivedSpan
from tests.turnout_server import RunningTurnout


def telemetry(receiver_endpoint: str, **extra: Any) -> dict[str, Any]:
    """The `telemetry:` section: exporting every 50 ms, an export given 0.5 s."""
    return {
        "otlp_endpoint": receiver_endpoint,
        "schedule_delay_ms": 50,
        "export_timeout_s": 0.5,
        **extra,
    }


def exported(
    server: RunningTurnout, receiver: OTLPReceiver, count: int, timeout: float = 5.0
) -> list[ReceivedSpan]:
    """The spans received once at least `count` came (a stream's spans end just after
    its last frame is sent: flushed again until they are in)."""
    deadline = time.monotonic() + timeout
    while True:
        tracing = server.app.state.gateway.tracing
        assert tracing is not None
        tracing.force_flush()
        if len(receiver.spans) >= count or time.monotonic() > deadline:
            return receiver.wait_for(count, timeout=0.1)
        time.sleep(0.02)


def one(spans: list[ReceivedSpan], kind: str) -> ReceivedSpan:
    found = [s for s in spans if s.kind == kind]
    assert len(found) == 1, [(s.name, s.kind) for s in spans]
    return found[0]


def children(spans: list[ReceivedSpan], parent: ReceivedSpan) -> list[ReceivedSpan]:
    """`parent`'s child spans, in the order they started."""
    found = [s for s in spans if s.parent_id == parent.span_id and s.trace_id == parent.trace_id]
    return sorted(found, key=lambda s: s.start_ns)


def traceparent_of(headers: dict[str, str]) -> tuple[str, str]:
    """(trace id, parent span id) of a `traceparent` header."""
    version, trace_id, parent_id, flags = headers["traceparent"].split("-")
    assert version == "00"
    assert int(flags, 16) & 1
    return trace_id, parent_id
