"""What a backend supports natively, declared once per adapter and frozen; config may
override it per provider or per deployment with a `capabilities:` mapping whose keys are
OpenAI option names plus `completions`/`chat`/`embeddings`/`responses`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Annotated, Any

from pydantic import AfterValidator

from providers.types import Endpoint

# Override keys: OpenAI option names (and endpoints) → the field they set.
_KEYS = {
    "completions": "completions",
    "chat": "chat",
    "embeddings": "embeddings",
    "responses": "responses",
    "stream": "stream",
    "non_streaming": "non_streaming",
    "stream_options": "stream_usage",
    "n": "max_n",
    "greedy_n": "greedy_n",
    "best_of": "best_of",
    "echo": "echo",
    "prompt_logprobs": "prompt_logprobs",
    "suffix": "suffix",
    "logprobs": "max_logprobs",
    "top_logprobs": "max_top_logprobs",
    "logit_bias": "logit_bias",
    "seed": "seed",
    "stop": "max_stop",
    "temperature": "max_temperature",
    "frequency_penalty": "penalties",
    "presence_penalty": "penalties",
    "tools": "tools",
    "response_format": "response_format",
    # Continuing a partial assistant answer (a broken stream's rescue, policies/continuation.py).
    "prefill": "prefill",
    # Chat options with nothing to emulate (router/schemas/chat_options.py).
    "custom_tools": "custom_tools",
    "reasoning_effort": "reasoning_effort",
    "verbosity": "verbosity",
    "modalities": "audio",
    "audio": "audio",
    "prediction": "prediction",
    "web_search_options": "web_search",
    "moderation": "moderation",
    "service_tier": "service_tier",
    "store": "store",
    "prompt_cache_key": "prompt_cache",
    "prompt_cache_retention": "prompt_cache",
    "prompt_cache_options": "prompt_cache",
    "safety_identifier": "safety_identifier",
}
OVERRIDE_KEYS = frozenset(_KEYS)
UNLIMITED_STOP = 1_000_000


@dataclass(frozen=True, slots=True)
class Capabilities:
    """Native support. Numeric fields are limits: `max_n` 1 means no `n`, `max_stop` 0 no
    `stop`, `max_logprobs` -1 no completions logprobs (0 is "the sampled token only").

    `non_streaming` false: the backend only streams (whole answers are assembled from its
    stream). `prompt_logprobs`: vLLM's extension, the prompt tokens' logprobs on request
    (`prompt_logprobs: k`, whole answers only); off unless declared. `greedy_n` false: n > 1
    is refused with greedy sampling (vLLM), so such requests are fanned out.
    `whitespace_stop` false: stop strings made only of whitespace are refused (Anthropic).
    `request_keys`: the only body keys the adapter can translate (None: any key is
    forwarded, as OpenAI-compatible servers take unknown fields). `prefill`: the backend
    continues a final assistant message (vLLM's `continue_final_message`, Anthropic's
    prefill, the local samplers); off unless declared, as many chat APIs refuse it or
    answer the message instead of continuing it.

    The chat options from `custom_tools` on cannot be emulated (policies/translation_options.py):
    those that change what the answer is (`custom_tools`, `reasoning_effort`, `verbosity`,
    `audio` output, `web_search`, `moderation`) make a deployment lacking them refuse the
    request unless the caller chose `drop`; the rest only tune cost, latency or bookkeeping
    (`prediction`, `service_tier`, `store`, `prompt_cache`, `safety_identifier`) and are
    dropped, and reported, except in `strict` mode."""

    completions: bool = True
    chat: bool = True
    embeddings: bool = True
    # OpenAI's Responses API natively (OpenAI, vLLM): off unless declared, as most
    # OpenAI-compatible servers have chat completions only.
    responses: bool = False
    stream: bool = True
    non_streaming: bool = True
    stream_usage: bool = True
    max_n: int = 128
    greedy_n: bool = True
    best_of: bool = True
    echo: bool = True
    prompt_logprobs: bool = False
    suffix: bool = True
    max_logprobs: int = 5
    max_top_logprobs: int = 20
    logit_bias: bool = True
    seed: bool = True
    max_stop: int = 4
    whitespace_stop: bool = True
    max_temperature: float = 2.0
    penalties: bool = True
    tools: bool = True
    response_format: bool = True
    prefill: bool = False
    custom_tools: bool = True
    reasoning_effort: bool = True
    verbosity: bool = True
    audio: bool = True
    web_search: bool = True
    moderation: bool = True
    prediction: bool = True
    service_tier: bool = True
    store: bool = True
    prompt_cache: bool = True
    safety_identifier: bool = True
    request_keys: frozenset[str] | None = None

    def serves(self, endpoint: Endpoint) -> bool:
        # Endpoint.MESSAGES has no flag: it is served by the adapters that list it
        # (policies/native.py), never through translation.
        return bool(getattr(self, endpoint.value, False))

    def without_chat_options(self) -> Capabilities:
        """These capabilities lacking every chat option that cannot be emulated."""
        return replace(
            self,
            custom_tools=False,
            reasoning_effort=False,
            verbosity=False,
            audio=False,
            web_search=False,
            moderation=False,
            prediction=False,
            service_tier=False,
            store=False,
            prompt_cache=False,
            safety_identifier=False,
        )

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> Capabilities:
        if not overrides:
            return self
        changes: dict[str, Any] = {}
        defaults = Capabilities()
        for key, value in overrides.items():
            name = _KEYS[key]
            default = getattr(defaults, name)
            changes[name] = _coerce(name, value, default)
        return replace(self, **changes)


def _coerce(name: str, value: Any, default: Any) -> Any:
    """`true` restores the OpenAI limit, `false` turns the option off, a number sets it."""
    if isinstance(default, bool):
        return bool(value)
    if value is True:
        return default
    if value is False:
        return {"max_n": 1, "max_stop": 0, "max_logprobs": -1, "max_top_logprobs": -1}.get(name, 0)
    return type(default)(value)


def check_overrides(overrides: dict[str, bool | int | float]) -> dict[str, bool | int | float]:
    """Validation for config: unknown keys name the known ones."""
    unknown = sorted(set(overrides) - OVERRIDE_KEYS)
    if unknown:
        raise ValueError(
            f"unknown capabilities {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})"
        )
    for key, value in overrides.items():
        if not isinstance(value, bool | int | float):
            raise ValueError(f"capability {key} must be true, false or a number")
    return overrides


FULL = Capabilities()
FIELD_NAMES = tuple(f.name for f in fields(Capabilities))


# A config `capabilities:` mapping (per provider or per deployment).
CapabilityOverrides = Annotated[dict[str, bool | int | float], AfterValidator(check_overrides)]
