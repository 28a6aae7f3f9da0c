"""`GenerationRequest`: what the local samplers are asked to do, read from an OpenAI body.

The router has already validated the body against the wire schema (types and ranges);
this module applies the defaults, normalizes the shapes (a prompt batch into a list of
prompts, `stop` into a tuple, `logit_bias` keys into ids, deprecated `functions` into
`tools`) and rejects, with a 400 naming the parameter, what the sampler cannot honour.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from providers.local.bad_request import bad_request
from providers.local.runner import RowSampling

Prompt = str | tuple[int, ...]
Body = Mapping[str, Any]
COMPLETIONS_DEFAULT_MAX_TOKENS = 16


def _value(body: Body, key: str, default: Any = None) -> Any:
    """`body[key]`, with an absent key and an explicit null both meaning the default."""
    value = body.get(key)
    return default if value is None else value


def _parse_prompts(prompt: Any) -> tuple[Prompt, ...]:
    """A completions `prompt` as a batch: one entry per prompt, text or token ids."""
    if isinstance(prompt, str):
        return (prompt,)
    if isinstance(prompt, Sequence) and prompt:
        if all(isinstance(item, int) for item in prompt):
            return (tuple(prompt),)
        if all(isinstance(item, str) for item in prompt):
            return tuple(prompt)
        if all(
            isinstance(item, Sequence) and item and all(isinstance(t, int) for t in item)
            for item in prompt
        ):
            return tuple(tuple(item) for item in prompt)
    raise bad_request(
        "prompt must be a string, a list of strings, a list of token ids or a list of "
        "non-empty token-id lists, and must not be an empty list.",
        "prompt",
    )


def _parse_stop(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    return tuple(str(item) for item in stop)


def _parse_logit_bias(bias: Any) -> dict[int, float]:
    if not bias:
        return {}
    parsed: dict[int, float] = {}
    for key, value in dict(bias).items():
        try:
            parsed[int(key)] = float(value)
        except (TypeError, ValueError) as exc:
            raise bad_request(
                f"logit_bias keys must be token ids, got {key!r}.", "logit_bias"
            ) from exc
    return parsed


def _chat_logprobs(body: Body) -> int | None:
    wanted = bool(_value(body, "logprobs", False))
    top = int(_value(body, "top_logprobs", 0))
    if top and not wanted:
        raise bad_request("top_logprobs requires logprobs to be true.", "top_logprobs")
    return top if wanted else None


def _chat_tools(body: Body) -> tuple[tuple[dict[str, Any], ...] | None, Any]:
    """`tools` and `tool_choice`, with deprecated `functions`/`function_call` mapped on."""
    tools = body.get("tools")
    choice = body.get("tool_choice")
    functions = body.get("functions")
    if tools is None and functions is not None:
        tools = [{"type": "function", "function": function} for function in functions]
        call = body.get("function_call")
        if isinstance(call, Mapping):
            choice = {"type": "function", "function": {"name": call.get("name")}}
        elif call is not None:
            choice = call
    if not tools:
        return None, choice
    return tuple(dict(tool) for tool in tools), choice


def _check_response_format(body: Body) -> None:
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type", "text") != "text":
        raise bad_request(
            f"response_format {response_format.get('type')!r} is not supported by the "
            "local sampler (no constrained decoding).",
            "response_format",
        )


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One completions or chat request, normalized for the engine.

    `logprobs` is the number of alternatives to report per position, or None when the
    client asked for no logprobs (completions' `logprobs: 0` is 0: the sampled token only).
    `max_tokens` None means: up to the context window. `continue_final`: chat only, the
    final assistant message is continued, not answered (vLLM's `continue_final_message`).
    """

    kind: Literal["completions", "chat"]
    prompts: tuple[Prompt, ...] = ()
    messages: tuple[dict[str, Any], ...] = ()
    tools: tuple[dict[str, Any], ...] | None = None
    tool_choice: Any = None
    max_tokens: int | None = None
    n: int = 1
    best_of: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    logit_bias: Mapping[int, float] = field(default_factory=dict)
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    logprobs: int | None = None
    echo: bool = False
    suffix: str | None = None
    stream: bool = False
    include_usage: bool = False
    user: str | None = None
    continue_final: bool = False

    @classmethod
    def from_completions(cls, body: Body) -> GenerationRequest:
        """Read a validated `/v1/completions` body."""
        n = int(_value(body, "n", 1))
        best_of = int(_value(body, "best_of", n)) or n
        stream = bool(_value(body, "stream", False))
        if best_of < n:
            raise bad_request(f"best_of ({best_of}) must be at least n ({n}).", "best_of")
        if stream and best_of > n:
            raise bad_request("best_of results cannot be streamed.", "best_of")
        logprobs = body.get("logprobs")
        return cls(
            kind="completions",
            prompts=_parse_prompts(body.get("prompt")),
            max_tokens=int(_value(body, "max_tokens", COMPLETIONS_DEFAULT_MAX_TOKENS)),
            n=n,
            best_of=best_of,
            logprobs=None if logprobs is None else int(logprobs),
            echo=bool(_value(body, "echo", False)),
            suffix=_value(body, "suffix") or None,
            **_shared(body, stream),
        )

    @classmethod
    def from_chat(cls, body: Body) -> GenerationRequest:
        """Read a validated `/v1/chat/completions` body."""
        _check_response_format(body)
        messages = body.get("messages")
        if not messages:
            raise bad_request("messages must be a non-empty list.", "messages")
        tools, tool_choice = _chat_tools(body)
        max_tokens = _value(body, "max_completion_tokens", body.get("max_tokens"))
        n = int(_value(body, "n", 1))
        return cls(
            kind="chat",
            messages=tuple(dict(message) for message in messages),
            tools=tools,
            tool_choice=tool_choice,
            max_tokens=None if max_tokens is None else int(max_tokens),
            n=n,
            best_of=n,
            logprobs=_chat_logprobs(body),
            continue_final=_continues_final(body, messages),
            **_shared(body, bool(_value(body, "stream", False))),
        )

    def row_sampling(self, candidate_index: int) -> RowSampling:
        """Sampling settings for candidate `candidate_index` (0..best_of-1) of a prompt;
        with a seed, candidate i is seeded `seed + i` (as vLLM does)."""
        return RowSampling(
            temperature=self.temperature,
            top_p=self.top_p,
            logit_bias=dict(self.logit_bias),
            frequency_penalty=self.frequency_penalty,
            presence_penalty=self.presence_penalty,
            seed=None if self.seed is None else self.seed + candidate_index,
            top_logprobs=self.logprobs or 0,
        )

    def check_vocab(self, vocab_size: int) -> None:
        """A 400 if `logit_bias` or a token-id prompt names an id outside the vocabulary."""
        for token in self.logit_bias:
            if not 0 <= token < vocab_size:
                raise bad_request(
                    f"logit_bias names token {token}, outside the vocabulary "
                    f"(0..{vocab_size - 1}).",
                    "logit_bias",
                )
        for prompt in self.prompts:
            if isinstance(prompt, tuple) and not all(0 <= t < vocab_size for t in prompt):
                raise bad_request(
                    f"prompt has a token id outside the vocabulary (0..{vocab_size - 1}).",
                    "prompt",
                )


def _continues_final(body: Body, messages: Any) -> bool:
    """vLLM's `continue_final_message`: only for a final assistant message, and not with a
    generation prompt, which would open a new turn after it."""
    if not _value(body, "continue_final_message", False):
        return False
    last = messages[-1] if isinstance(messages, list) and messages else None
    if not isinstance(last, Mapping) or last.get("role") != "assistant":
        raise bad_request(
            "continue_final_message needs a final assistant message to continue.", "messages"
        )
    if _value(body, "add_generation_prompt", False):
        raise bad_request(
            "continue_final_message and add_generation_prompt cannot both be true.",
            "add_generation_prompt",
        )
    return True


def _shared(body: Body, stream: bool) -> dict[str, Any]:
    """The fields both endpoints read the same way."""
    options = _value(body, "stream_options", {})
    seed = body.get("seed")
    return {
        "temperature": float(_value(body, "temperature", 1.0)),
        "top_p": float(_value(body, "top_p", 1.0)),
        "stop": _parse_stop(body.get("stop")),
        "seed": None if seed is None else int(seed),
        "logit_bias": _parse_logit_bias(body.get("logit_bias")),
        "frequency_penalty": float(_value(body, "frequency_penalty", 0.0)),
        "presence_penalty": float(_value(body, "presence_penalty", 0.0)),
        "stream": stream,
        "include_usage": stream and bool(_value(options, "include_usage", False)),
        "user": body.get("user"),
    }
