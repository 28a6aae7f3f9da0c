"""A continued stream (policies/continuation.py) is charged once for each leg: its usage
chunk adds up every leg (the broken one at its estimate where it reported none), and the
limits settle on that sum, with no leg counted twice. Real Turnout, fake upstreams that
cut a stream mid-answer, the official SDK."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tests.fakes.openai_upstream import CutStream, FakeOpenAIUpstream, Ok
from tests.manual_clock import ManualClock
from tests.policies.test_call_charges_e2e import KEY, MESSAGES, TPM, charged
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
TARGET = "alpha beta gamma delta epsilon zeta"


def test_a_continued_stream_is_charged_each_leg_once(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.enqueue(
        CutStream(after_events=3, pause=0.2, text=TARGET), Ok(text=TARGET, prefill=True)
    )
    config: dict[str, Any] = simple_config(
        {"a": upstream.base_url},
        keys=[{"key": KEY, "limits": {"tpm": TPM}}],
        timeouts={"connect": 2, "first_byte": 3, "stream_idle": 0.6, "total": 15},
    )
    config["providers"]["a"]["capabilities"] = {"prefill": True}
    server = turnout(config, ManualClock())
    usage = None
    with server.client(KEY) as client:
        stream = client.chat.completions.create(
            model="m",
            messages=MESSAGES,
            stream=True,
            max_tokens=50,
            stream_options={"include_usage": True},
        )
        text = ""
        for chunk in stream:
            usage = chunk.usage or usage
            text += "".join(c.delta.content or "" for c in chunk.choices)
    assert text == TARGET
    assert usage is not None
    assert len([r for r in upstream.requests if r.method == "POST"]) == 2  # continued once
    assert charged(server) == usage.total_tokens
