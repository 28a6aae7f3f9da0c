"""The planner against the Anthropic adapter's declared capabilities: what its wire
translation cannot take is known before any call, and emulated, dropped or refused."""

from __future__ import annotations

from typing import Any

import pytest

from policies.translation import Mode, Refusal, Translation, translate
from providers.anthropic.adapter import ANTHROPIC_CAPABILITIES
from providers.anthropic.wire import to_wire
from providers.emulation import EMULABLE
from providers.types import Endpoint

CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def plan(body: dict[str, Any], mode: Mode = Mode.EMULATE) -> Translation | Refusal:
    return translate(Endpoint.CHAT, {**CHAT, **body}, ANTHROPIC_CAPABILITIES, mode, EMULABLE)


@pytest.mark.parametrize(
    "body",
    [
        {"reasoning_effort": "low"},
        {"functions": [{"name": "f", "parameters": {"type": "object"}}]},
        {"function_call": "auto"},
        {"top_logprobs": 2},
        {"web_search_options": {"search_context_size": "low"}},
    ],
)
def test_keys_the_adapter_cannot_translate_are_refused_or_dropped_before_a_call(
    body: dict[str, Any],
) -> None:
    [param] = body
    for mode in (Mode.EMULATE, Mode.STRICT):
        refusal = plan(body, mode)
        assert isinstance(refusal, Refusal)
        assert refusal.param == param
    dropped = plan(body, Mode.DROP)
    assert isinstance(dropped, Translation)
    assert dropped.dropped == (param,)
    to_wire(dropped.body)  # what is left, the adapter takes


def test_what_the_adapter_takes_passes() -> None:
    body = {
        "stop": ["END"],
        "temperature": 0.5,
        "metadata": {"a": "b"},
        "logprobs": False,
        "frequency_penalty": 0,
        "logit_bias": {},
        "seed": None,
        "stream": True,
    }
    fit = plan(body, Mode.STRICT)
    assert isinstance(fit, Translation)
    assert (fit.emulated, fit.dropped) == ((), ())
    assert "logit_bias" not in fit.body  # empty: nothing to refuse, nothing to send
    to_wire(fit.body)


def test_completions_keys_are_taken_by_the_chat_conversion() -> None:
    body = {"model": "m", "prompt": ["a", "b"], "echo": True, "max_tokens": 5}
    fit = translate(Endpoint.COMPLETIONS, body, ANTHROPIC_CAPABILITIES, Mode.EMULATE, EMULABLE)
    assert isinstance(fit, Translation)
    assert fit.emulated == ("completions", "echo")


@pytest.mark.parametrize("stop", ["\n", [" ", "END"], ["END", "\t\n"]])
def test_whitespace_only_stop_sequences_are_matched_by_turnout(stop: Any) -> None:
    fit = plan({"stop": stop})
    assert isinstance(fit, Translation)
    assert fit.emulated == ("stop",)
    strict = plan({"stop": stop}, Mode.STRICT)
    assert isinstance(strict, Refusal)
    assert strict.param == "stop"
    assert "whitespace-only" in strict.message
    dropped = plan({"stop": stop}, Mode.DROP)
    assert isinstance(dropped, Translation)
    assert dropped.dropped == ("stop",)
    kept = [s for s in ([stop] if isinstance(stop, str) else stop) if s.strip()]
    assert dropped.body["stop"] == kept
    to_wire(dropped.body)


def test_stop_sequences_with_text_stay_native() -> None:
    assert plan({"stop": [" END ", "x"]}, Mode.STRICT) == Translation(
        {**CHAT, "stop": [" END ", "x"]}
    )
