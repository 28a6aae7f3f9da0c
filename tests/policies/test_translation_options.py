"""The planner and the chat options nothing can emulate: what each backend kind declares,
and how each translation mode treats an option a deployment lacks."""

from __future__ import annotations

from typing import Any

import pytest

from policies.translation import Mode, Refusal, Translation, translate
from providers.anthropic.adapter import ANTHROPIC_CAPABILITIES
from providers.anthropic.wire import to_wire
from providers.capabilities import FULL, Capabilities
from providers.emulation import EMULABLE, Declared
from providers.errors import UpstreamError
from providers.local.factory import build_local_provider
from providers.local.settings import LocalModelSettings
from providers.local.tokenizer_cache import TokenizerCache
from providers.types import Endpoint

CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
CHANGING = {
    "reasoning_effort": "low",
    "verbosity": "low",
    "modalities": ["audio"],
    "audio": {"voice": "alloy", "format": "wav"},
    "web_search_options": {},
    "moderation": {"model": "omni-moderation-latest"},
}
TUNING = {
    "prediction": {"type": "content", "content": "x"},
    "service_tier": "flex",
    "store": True,
    "prompt_cache_key": "k",
    "prompt_cache_retention": "24h",
    "prompt_cache_options": {"ttl": "30m"},
    "safety_identifier": "s",
}
LACKING = FULL.without_chat_options()


def plan(
    body: dict[str, Any], capabilities: Capabilities, mode: Mode = Mode.EMULATE
) -> Translation | Refusal:
    return translate(Endpoint.CHAT, {**CHAT, **body}, capabilities, mode, EMULABLE)


def _never_loaded(_: object) -> Any:
    raise AssertionError("building a provider must not load its model")


def test_the_local_samplers_declare_none_of_the_options() -> None:
    settings = LocalModelSettings(model="smollm2-135m-instruct")
    provider = build_local_provider("local", settings, _never_loaded, _never_loaded)
    assert provider.capabilities == provider.capabilities.without_chat_options()
    assert provider.capabilities.max_n == settings.max_slots  # sampling options still native


@pytest.mark.parametrize("capabilities", [LACKING, ANTHROPIC_CAPABILITIES], ids=["local", "claude"])
def test_every_mode_on_a_deployment_lacking_the_options(capabilities: Capabilities) -> None:
    for key, value in {**CHANGING, **TUNING}.items():
        strict = plan({key: value}, capabilities, Mode.STRICT)
        assert isinstance(strict, Refusal)
        assert strict.param == key
        dropped = plan({key: value}, capabilities, Mode.DROP)
        assert isinstance(dropped, Translation)
        assert (dropped.dropped, dropped.body) == ((key,), CHAT)
        emulated = plan({key: value}, capabilities)
        if key in CHANGING:
            assert isinstance(emulated, Refusal)
            assert emulated.param == key
        else:
            assert isinstance(emulated, Translation)
            assert emulated.dropped == (key,)


def test_what_is_left_for_anthropic_its_wire_takes() -> None:
    fit = plan({**TUNING, "store": False, "modalities": ["text"]}, ANTHROPIC_CAPABILITIES)
    assert isinstance(fit, Translation)
    assert set(fit.dropped) == set(TUNING) - {"store"}  # `store: false` asks for nothing
    to_wire(fit.body)


def test_a_backend_with_the_options_gets_them_untouched() -> None:
    body = {**CHANGING, **TUNING}
    fit = plan(body, FULL, Mode.STRICT)
    assert isinstance(fit, Translation)
    assert fit.body == {**CHAT, **body}
    assert (fit.emulated, fit.dropped) == ((), ())


def test_chat_through_a_completions_template_has_none_of_them() -> None:
    declared = Declared(tokenizer=TokenizerCache().source("smollm2-135m-instruct"))
    body = {**CHAT, "reasoning_effort": "low", "prompt_cache_key": "k"}
    completions_only = Capabilities(chat=False)  # every option "native" to its completions
    refusal = translate(Endpoint.CHAT, body, completions_only, Mode.EMULATE, EMULABLE, declared)
    assert isinstance(refusal, Refusal)
    assert refusal.param == "reasoning_effort"
    fit = translate(Endpoint.CHAT, body, completions_only, Mode.DROP, EMULABLE, declared)
    assert isinstance(fit, Translation)
    assert fit.emulated == ("chat",)
    assert fit.dropped == ("reasoning_effort", "prompt_cache_key")


@pytest.mark.parametrize(
    ("key", "field"),
    [
        ("reasoning_effort", "reasoning_effort"),
        ("modalities", "audio"),
        ("audio", "audio"),
        ("web_search_options", "web_search"),
        ("prompt_cache_key", "prompt_cache"),
        ("prompt_cache_retention", "prompt_cache"),
        ("custom_tools", "custom_tools"),
        ("safety_identifier", "safety_identifier"),
    ],
)
def test_config_names_the_options_as_openai_does(key: str, field: str) -> None:
    assert getattr(FULL.with_overrides({key: False}), field) is False
    assert getattr(LACKING.with_overrides({key: True}), field) is True


def test_a_conversation_with_custom_tool_calls_needs_custom_tools() -> None:
    call = {"id": "c1", "type": "custom", "custom": {"name": "sql", "input": "x"}}
    body = {
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [call]}]
    }
    for mode in Mode:
        refusal = plan(body, ANTHROPIC_CAPABILITIES, mode)
        assert isinstance(refusal, Refusal)
        assert refusal.param == "messages"
    fit = plan(body, FULL, Mode.STRICT)
    assert isinstance(fit, Translation)
    with pytest.raises(UpstreamError) as caught:
        to_wire(body)  # the adapter refuses it too, should it get there
    assert caught.value.param == "messages[1].tool_calls[].type"
