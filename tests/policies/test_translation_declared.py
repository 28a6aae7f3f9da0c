"""The planner's decisions that depend on what a deployment declares (a FIM template, a
tokenizer, vLLM's prompt logprobs) and on options backends often lack: usage in streams,
non-streamed answers, token ids and logit_bias."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from policies.config import Deployment
from policies.translation import Mode, Refusal, Translation, declared_for, translate
from providers.capabilities import Capabilities
from providers.emulation import EMULABLE, INCLUDE_USAGE, NOTHING_DECLARED, Declared, FimTemplate
from providers.local.tokenizer_cache import TokenizerCache
from providers.types import Endpoint

CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
TEXT: dict[str, Any] = {"model": "m", "prompt": "def f("}
TOKENIZER = TokenizerCache().source("smollm2-135m-instruct")
FIM = Declared(fim=FimTemplate.parse("starcoder"))
WITH_TOKENIZER = Declared(tokenizer=TOKENIZER)
NOT_SHARED = Declared(shares_tokenizer=False)


def plan(
    endpoint: Endpoint,
    body: dict[str, Any],
    mode: Mode = Mode.EMULATE,
    declared: Declared = NOTHING_DECLARED,
    **capabilities: Any,
) -> Translation | Refusal:
    base = CHAT if endpoint is Endpoint.CHAT else TEXT
    return translate(
        endpoint, {**base, **body}, Capabilities(**capabilities), mode, EMULABLE, declared
    )


def emulated(fit: Translation | Refusal) -> tuple[str, ...]:
    assert isinstance(fit, Translation), fit
    return fit.emulated


# suffix


def test_suffix_is_emulated_only_with_a_declared_template() -> None:
    suffix = {"suffix": "x"}
    assert emulated(plan(Endpoint.COMPLETIONS, suffix, declared=FIM, suffix=False)) == ("suffix",)
    refusal = plan(Endpoint.COMPLETIONS, suffix, suffix=False)
    assert isinstance(refusal, Refusal)
    assert refusal.param == "suffix"
    strict = plan(Endpoint.COMPLETIONS, suffix, Mode.STRICT, FIM, suffix=False)
    assert isinstance(strict, Refusal)
    assert strict.param == "suffix"
    dropped = plan(Endpoint.COMPLETIONS, suffix, Mode.DROP, suffix=False)
    assert isinstance(dropped, Translation)
    assert dropped.dropped == ("suffix",)
    assert "suffix" not in dropped.body


def test_a_declared_template_is_used_even_where_suffix_is_native() -> None:
    assert emulated(plan(Endpoint.COMPLETIONS, {"suffix": "x"}, declared=FIM)) == ("suffix",)
    assert plan(Endpoint.COMPLETIONS, {}, declared=FIM) == Translation(TEXT, declared=FIM)


def test_suffix_on_a_chat_only_backend_is_an_instruction_without_a_template() -> None:
    fit = plan(Endpoint.COMPLETIONS, {"suffix": "x"}, completions=False)
    assert emulated(fit) == ("completions", "suffix")


def test_a_template_cannot_echo_with_logprobs() -> None:
    body = {"suffix": "x", "echo": True, "logprobs": 1}
    refusal = plan(Endpoint.COMPLETIONS, body, declared=FIM, suffix=False)
    assert isinstance(refusal, Refusal)
    assert refusal.param == "echo"
    dropped = plan(Endpoint.COMPLETIONS, body, Mode.DROP, FIM, suffix=False)
    assert isinstance(dropped, Translation)  # drop mode drops suffix; echo stays native
    assert (dropped.emulated, dropped.dropped, dropped.body["echo"]) == ((), ("suffix",), True)


# chat on a completion-only backend


def test_chat_through_the_template_needs_a_declared_tokenizer() -> None:
    assert emulated(plan(Endpoint.CHAT, {}, declared=WITH_TOKENIZER, chat=False)) == ("chat",)
    refusal = plan(Endpoint.CHAT, {}, chat=False)
    assert isinstance(refusal, Refusal)
    assert refusal.param == "model"
    assert "tokenizer" in refusal.message
    strict = plan(Endpoint.CHAT, {}, Mode.STRICT, WITH_TOKENIZER, chat=False)
    assert isinstance(strict, Refusal)
    assert strict.param == "model"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
    ],
)
def test_what_a_prompt_cannot_express_is_refused_or_dropped(
    body: dict[str, Any], param: str
) -> None:
    refusal = plan(Endpoint.CHAT, body, declared=WITH_TOKENIZER, chat=False)
    assert isinstance(refusal, Refusal)
    assert refusal.param == param
    dropped = plan(Endpoint.CHAT, body, Mode.DROP, WITH_TOKENIZER, chat=False)
    assert isinstance(dropped, Translation)
    assert dropped.dropped == (param,)


def test_chat_top_logprobs_are_clamped_to_the_completions_limit() -> None:
    body = {"logprobs": True, "top_logprobs": 10}
    fit = plan(Endpoint.CHAT, body, declared=WITH_TOKENIZER, chat=False)
    assert isinstance(fit, Translation)
    assert (fit.clamped, fit.body["top_logprobs"]) == (("top_logprobs",), 5)


# usage in streams

STREAM_USAGE = {"stream": True, "stream_options": {"include_usage": True}}


def test_stream_usage_is_counted_with_a_declared_tokenizer() -> None:
    fit = plan(Endpoint.CHAT, STREAM_USAGE, declared=WITH_TOKENIZER, stream_usage=False)
    assert emulated(fit) == (INCLUDE_USAGE,)


def test_stream_usage_without_a_tokenizer_is_dropped_in_emulate_and_refused_in_strict() -> None:
    body = {"stream": True, "stream_options": {"include_usage": True, "include_obfuscation": False}}
    fit = plan(Endpoint.CHAT, body, stream_usage=False)
    assert isinstance(fit, Translation)
    assert fit.dropped == (INCLUDE_USAGE,)
    assert fit.body["stream_options"] == {"include_obfuscation": False}
    only = plan(Endpoint.CHAT, STREAM_USAGE, stream_usage=False)
    assert isinstance(only, Translation)
    assert "stream_options" not in only.body
    strict = plan(Endpoint.CHAT, STREAM_USAGE, Mode.STRICT, WITH_TOKENIZER, stream_usage=False)
    assert isinstance(strict, Refusal)
    assert strict.param == INCLUDE_USAGE
    drop = plan(Endpoint.CHAT, STREAM_USAGE, Mode.DROP, WITH_TOKENIZER, stream_usage=False)
    assert isinstance(drop, Translation)
    assert drop.dropped == (INCLUDE_USAGE,)


def test_a_synthetic_stream_needs_no_usage_counting() -> None:
    fit = plan(Endpoint.CHAT, STREAM_USAGE, stream=False, stream_usage=False)
    assert emulated(fit) == ("stream",)


def test_every_stream_asks_for_its_usage_without_reporting_it() -> None:
    body = {"stream": True, "stream_options": {"include_obfuscation": False}}
    fit = plan(Endpoint.CHAT, body, Mode.STRICT)
    assert isinstance(fit, Translation)
    assert fit.body["stream_options"] == {"include_obfuscation": False, "include_usage": True}
    assert (fit.emulated, fit.dropped, fit.internal) == ((), (), ())
    synthetic = plan(Endpoint.CHAT, {"stream": True}, stream=False)  # replays a whole answer
    assert isinstance(synthetic, Translation)
    assert synthetic.body["stream_options"] == {"include_usage": True}


def test_usage_nobody_asked_for_is_counted_where_streams_have_none() -> None:
    counted = plan(Endpoint.CHAT, {"stream": True}, declared=WITH_TOKENIZER, stream_usage=False)
    assert isinstance(counted, Translation)
    assert (counted.emulated, counted.internal) == ((), (INCLUDE_USAGE,))
    assert counted.applied == (INCLUDE_USAGE,)
    assert counted.body["stream_options"] == {"include_usage": True}  # for StreamUsage
    uncounted = plan(Endpoint.CHAT, {"stream": True}, stream_usage=False)
    assert uncounted == Translation({**CHAT, "stream": True})  # nothing sent it cannot take


@pytest.mark.parametrize("asked", [True, False])
def test_a_stream_cut_at_an_emulated_stop_has_usage_only_with_a_tokenizer(asked: bool) -> None:
    body = {"stream": True, "stop": ["x"], "stream_options": {"include_usage": asked}}
    bare = plan(Endpoint.CHAT, body, max_stop=0)
    assert isinstance(bare, Translation)
    assert bare.emulated == ("stop",)
    assert bare.dropped == ((INCLUDE_USAGE,) if asked else ())
    counted = plan(Endpoint.CHAT, body, declared=WITH_TOKENIZER, max_stop=0)
    assert isinstance(counted, Translation)
    assert (counted.emulated, counted.dropped) == (("stop",), ())
    whole = plan(Endpoint.CHAT, {"stop": ["x"]}, max_stop=0)
    assert isinstance(whole, Translation)
    assert whole.dropped == ()


# stream-only backends


def test_whole_answers_from_a_stream_only_backend_are_assembled() -> None:
    assert emulated(plan(Endpoint.CHAT, {}, non_streaming=False)) == ("non_streaming",)
    assert plan(Endpoint.CHAT, STREAM_USAGE, non_streaming=False) == Translation(
        {**CHAT, **STREAM_USAGE}
    )
    refusal = plan(Endpoint.CHAT, {}, Mode.STRICT, non_streaming=False)
    assert isinstance(refusal, Refusal)
    assert refusal.param == "stream"
    drop = plan(Endpoint.CHAT, {}, Mode.DROP, non_streaming=False)
    assert emulated(drop) == ("non_streaming",)  # nothing to drop: the client awaits JSON


# echo with logprobs


def test_echo_with_logprobs_is_emulated_only_with_prompt_logprobs() -> None:
    body = {"echo": True, "logprobs": 2}
    fit = plan(Endpoint.COMPLETIONS, body, echo=False, prompt_logprobs=True)
    assert emulated(fit) == ("echo",)
    refusal = plan(Endpoint.COMPLETIONS, body, echo=False)
    assert isinstance(refusal, Refusal)
    assert refusal.param == "echo"
    best_of = plan(Endpoint.COMPLETIONS, {"echo": True, "best_of": 2}, echo=False, best_of=False)
    assert isinstance(best_of, Refusal)
    assert best_of.param == "echo"


# token ids and logit_bias


def test_logit_bias_stays_with_the_primary_tokenizer() -> None:
    bias = {"logit_bias": {"5": 1.0}}
    assert plan(Endpoint.CHAT, bias) == Translation({**CHAT, **bias})
    refusal = plan(Endpoint.CHAT, bias, declared=NOT_SHARED)
    assert isinstance(refusal, Refusal)
    assert refusal.param == "logit_bias"
    dropped = plan(Endpoint.CHAT, bias, Mode.DROP, NOT_SHARED)
    assert isinstance(dropped, Translation)
    assert dropped.dropped == ("logit_bias",)


@pytest.mark.parametrize("mode", list(Mode))
def test_token_ids_stay_with_the_primary_tokenizer(mode: Mode) -> None:
    refusal = plan(Endpoint.COMPLETIONS, {"prompt": [1, 2]}, mode, NOT_SHARED)
    assert isinstance(refusal, Refusal)
    assert refusal.param == "prompt"


@pytest.mark.parametrize(
    ("body", "capabilities"),
    [({"echo": True}, {"echo": False}), ({}, {"completions": False})],
)
def test_emulations_that_write_the_prompt_as_text_refuse_token_ids(
    body: dict[str, Any], capabilities: dict[str, Any]
) -> None:
    refusal = plan(Endpoint.COMPLETIONS, {"prompt": [[1, 2], [3]], **body}, **capabilities)
    assert isinstance(refusal, Refusal)
    assert refusal.param == "prompt"


def test_declared_for_reads_the_deployment_and_compares_tokenizers() -> None:
    tokenizers = TokenizerCache()
    primary = Deployment(provider="a", model="x", tokenizer="smollm2-135m-instruct")
    twin = Deployment(provider="b", model="y", tokenizer="smollm2-135m-instruct", fim="qwen")
    other = Deployment(provider="c", model="z", tokenizer="all-minilm-l6-v2")
    bare = Deployment(provider="d", model="w")
    assert declared_for(primary, primary, tokenizers).shares_tokenizer
    twin_declared = declared_for(twin, primary, tokenizers)
    assert twin_declared.shares_tokenizer
    assert twin_declared.fim == FimTemplate.parse("qwen")
    assert twin_declared.tokenizer is not None
    assert twin_declared.tokenizer.name == "smollm2-135m-instruct"
    assert not declared_for(other, primary, tokenizers).shares_tokenizer
    assert not declared_for(bare, primary, tokenizers).shares_tokenizer
    assert not declared_for(primary, bare, tokenizers).shares_tokenizer
    assert declared_for(bare, bare, tokenizers) == Declared()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("fim", "santacoder", "fim must be a preset"),
        ("fim", "<a>{prompt}<b>", "fim must be a preset"),
        ("fim", 3, "fim must be a preset name or a template"),
        ("tokenizer", "/nowhere/at/all", "tokenizer '/nowhere/at/all' not found"),
    ],
)
def test_bad_declarations_are_config_errors(field: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Deployment.model_validate({"provider": "a", "model": "x", field: value})
