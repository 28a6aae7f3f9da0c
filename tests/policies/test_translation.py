"""The translation planner, as a pure function of (endpoint, body, capabilities, mode)."""

from __future__ import annotations

from typing import Any

import pytest

from policies.translation import Mode, Refusal, Translation, translate
from providers.capabilities import Capabilities
from providers.emulation import EMULABLE
from providers.types import Endpoint

CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
NARROW = Capabilities(
    completions=False,
    max_n=1,
    seed=False,
    max_stop=0,
    max_temperature=1.0,
    max_logprobs=3,
    stream=False,
)


def plan(body: dict[str, Any], mode: Mode, endpoint: Endpoint = Endpoint.CHAT) -> Any:
    return translate(endpoint, {**CHAT, **body}, NARROW, mode, EMULABLE)


def test_a_request_within_native_capabilities_is_sent_as_it_is() -> None:
    body = {**CHAT, "n": 2, "seed": 1, "stop": ["x"], "temperature": 1.9}
    fit = translate(Endpoint.CHAT, body, Capabilities(), Mode.STRICT, EMULABLE)
    assert fit == Translation(body)
    assert isinstance(fit, Translation)
    assert fit.body is body


@pytest.mark.parametrize(
    ("body", "emulated"),
    [({"n": 3}, ("n",)), ({"stop": ["a", "b"]}, ("stop",)), ({"stream": True}, ("stream",))],
)
def test_emulate_mode_emulates_what_turnout_can(body: dict[str, Any], emulated: tuple[str]) -> None:
    fit = plan(body, Mode.EMULATE)
    assert isinstance(fit, Translation)
    assert fit.emulated == emulated
    # The emulation, not the planner, rewrites the body; a stream is asked for its usage.
    usage = {"stream_options": {"include_usage": True}} if "stream" in body else {}
    assert fit.body == {**CHAT, **body, **usage}


def test_emulate_mode_refuses_what_has_no_emulation() -> None:
    assert plan({"seed": 4}, Mode.EMULATE) == Refusal(
        "seed", "`seed` is not supported by this deployment"
    )


@pytest.mark.parametrize("body", [{"n": 3}, {"seed": 4}, {"stop": "x"}, {"stream": True}])
def test_strict_mode_refuses_anything_not_native(body: dict[str, Any]) -> None:
    refusal = plan(body, Mode.STRICT)
    assert isinstance(refusal, Refusal)
    assert refusal.param == next(iter(body))


def test_drop_mode_drops_and_reports() -> None:
    fit = plan({"seed": 4, "n": 2}, Mode.DROP)
    assert isinstance(fit, Translation)
    assert set(fit.dropped) == {"seed", "n"}
    assert "seed" not in fit.body
    assert "n" not in fit.body


def test_a_stream_is_never_dropped_but_emulated() -> None:
    fit = plan({"stream": True}, Mode.DROP)
    assert isinstance(fit, Translation)
    assert fit.emulated == ("stream",)
    assert fit.body["stream"] is True


def test_out_of_range_values_are_clamped_or_refused() -> None:
    fit = plan({"temperature": 1.7}, Mode.EMULATE)
    assert isinstance(fit, Translation)
    assert (fit.clamped, fit.body["temperature"]) == (("temperature",), 1.0)
    completion = translate(
        Endpoint.COMPLETIONS, {"prompt": "x", "logprobs": 5}, Capabilities(max_logprobs=3),
        Mode.DROP, EMULABLE,
    )  # fmt: skip
    assert isinstance(completion, Translation)
    assert completion.body["logprobs"] == 3
    refusal = plan({"temperature": 1.7}, Mode.STRICT)
    assert isinstance(refusal, Refusal)
    assert refusal.param == "temperature"


def test_an_endpoint_the_deployment_does_not_serve_is_refused() -> None:
    no_embeddings = Capabilities(embeddings=False)
    embeddings = translate(
        Endpoint.EMBEDDINGS, {"input": "x"}, no_embeddings, Mode.EMULATE, EMULABLE
    )
    assert isinstance(embeddings, Refusal)
    assert embeddings.param == "model"
    refusal = plan({"prompt": "x"}, Mode.STRICT, Endpoint.COMPLETIONS)
    assert isinstance(refusal, Refusal)
    assert refusal.param == "model"


def test_capability_overrides_from_config() -> None:
    narrowed = Capabilities().with_overrides({"n": False, "stop": 2, "temperature": 1})
    assert (narrowed.max_n, narrowed.max_stop, narrowed.max_temperature) == (1, 2, 1.0)
    assert narrowed.with_overrides({"n": True}).max_n == 128


def test_n_with_best_of_on_a_backend_without_n_is_fanned_out_by_best_of() -> None:
    no_n = Capabilities(max_n=1, best_of=False)
    body = {"prompt": "x", "n": 2, "best_of": 4}
    fit = translate(Endpoint.COMPLETIONS, body, no_n, Mode.EMULATE, EMULABLE)
    assert isinstance(fit, Translation)
    assert fit.emulated == ("n", "best_of")  # best_of calls of n=1, the best 2 kept
    assert fit.body == body
    native_best_of = Capabilities(max_n=2)  # best_of native, but not with n=3
    body = {"prompt": "x", "n": 3, "best_of": 4}
    fit = translate(Endpoint.COMPLETIONS, body, native_best_of, Mode.EMULATE, EMULABLE)
    assert isinstance(fit, Translation)
    assert fit.emulated == ("n", "best_of")
    strict = translate(Endpoint.COMPLETIONS, body, no_n, Mode.STRICT, EMULABLE)
    assert strict == Refusal("n", "n=3 with best_of is not supported by this deployment")
    blind = Capabilities(max_n=1, best_of=False, max_logprobs=-1)
    refusal = translate(Endpoint.COMPLETIONS, body, blind, Mode.EMULATE, EMULABLE)
    assert isinstance(refusal, Refusal)
    assert refusal.param == "best_of"


@pytest.mark.parametrize("mode", list(Mode))
def test_best_of_equal_to_n_is_not_sent_to_a_backend_without_best_of(mode: Mode) -> None:
    body = {"prompt": "x", "n": 2, "best_of": 2}
    fit = translate(Endpoint.COMPLETIONS, body, Capabilities(best_of=False), mode, EMULABLE)
    assert isinstance(fit, Translation)
    assert fit.body == {"prompt": "x", "n": 2}  # a no-op: removed, and nothing to report
    assert (fit.emulated, fit.dropped, fit.clamped) == ((), (), ())
    native = translate(Endpoint.COMPLETIONS, body, Capabilities(), mode, EMULABLE)
    assert isinstance(native, Translation)
    assert native.body is body


@pytest.mark.parametrize(
    ("body", "sent"),
    [
        ({"logit_bias": {}}, {}),
        ({"stop": []}, {}),
        ({"stop": ""}, {}),
        ({"stop": ["", ""]}, {}),
        ({"logit_bias": {}, "stop": [], "seed": None}, {"seed": None}),
    ],
)
def test_empty_values_are_not_sent_to_a_backend_without_the_option(
    body: dict[str, Any], sent: dict[str, Any]
) -> None:
    lacking = Capabilities(logit_bias=False, max_stop=0, seed=False)
    fit = translate(Endpoint.CHAT, {**CHAT, **body}, lacking, Mode.STRICT, EMULABLE)
    assert isinstance(fit, Translation)
    assert fit.body == {**CHAT, **sent}
    assert (fit.emulated, fit.dropped) == ((), ())


def test_greedy_n_is_fanned_out_where_the_backend_refuses_it() -> None:
    vllm = Capabilities().with_overrides({"greedy_n": False})
    assert not vllm.greedy_n
    greedy = translate(
        Endpoint.CHAT, {**CHAT, "n": 3, "temperature": 0}, vllm, Mode.EMULATE, EMULABLE
    )
    assert isinstance(greedy, Translation)
    assert greedy.emulated == ("n",)
    sampled = {**CHAT, "n": 3, "temperature": 0.7}
    assert translate(Endpoint.CHAT, sampled, vllm, Mode.STRICT, EMULABLE) == Translation(sampled)
    strict = translate(Endpoint.CHAT, {**CHAT, "n": 3, "temperature": 0}, vllm, Mode.STRICT)
    assert strict == Refusal("n", "n=3 with greedy sampling is not supported by this deployment")
    single = {**CHAT, "temperature": 0}
    assert translate(Endpoint.CHAT, single, vllm, Mode.STRICT) == Translation(single)


CHAT_ONLY = Capabilities(
    completions=False, embeddings=False, echo=False, best_of=False, max_top_logprobs=20
)
PROMPT: dict[str, Any] = {"model": "m", "prompt": "x"}


def test_completions_on_a_chat_only_backend_are_emulated_prompt_by_prompt() -> None:
    fit = translate(Endpoint.COMPLETIONS, PROMPT, CHAT_ONLY, Mode.EMULATE, EMULABLE)
    assert isinstance(fit, Translation)
    assert fit.emulated == ("completions",)
    strict = translate(Endpoint.COMPLETIONS, PROMPT, CHAT_ONLY, Mode.STRICT, EMULABLE)
    assert isinstance(strict, Refusal)
    assert strict.param == "model"


def test_echo_is_emulated_unless_prompt_logprobs_are_asked_for() -> None:
    fit = translate(
        Endpoint.COMPLETIONS, {**PROMPT, "echo": True}, CHAT_ONLY, Mode.EMULATE, EMULABLE
    )
    assert isinstance(fit, Translation)
    assert fit.emulated == ("completions", "echo")
    body = {**PROMPT, "echo": True, "logprobs": 1}
    refusal = translate(Endpoint.COMPLETIONS, body, CHAT_ONLY, Mode.EMULATE, EMULABLE)
    assert refusal == Refusal("echo", "echo with logprobs needs prompt logprobs")


def test_best_of_is_emulated_only_where_logprobs_exist() -> None:
    body = {**PROMPT, "best_of": 3}
    fit = translate(Endpoint.COMPLETIONS, body, CHAT_ONLY, Mode.EMULATE, EMULABLE)
    assert isinstance(fit, Translation)
    assert fit.emulated == ("completions", "best_of")
    blind = Capabilities(best_of=False, max_logprobs=-1, max_top_logprobs=-1)
    refusal = translate(Endpoint.COMPLETIONS, body, blind, Mode.EMULATE, EMULABLE)
    assert isinstance(refusal, Refusal)
    assert refusal.param == "best_of"
