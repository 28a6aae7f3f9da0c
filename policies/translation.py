"""Deciding, before any call, how one deployment can honour a request: natively, by an
emulation Turnout performs, by dropping or clamping what it cannot do — or not at all.

The caller chooses per model (config `translation:`) or per request
(`{"router": {"translation": ...}}`): `emulate` (default) emulates what Turnout can emulate
and clamps out-of-range values, refusing the rest; `strict` refuses anything not native;
`drop` removes what is not native (and clamps). A deployment that cannot honour a request
is skipped before it is called.

Some emulations need what the deployment's config declares besides capability flags:
- `suffix`: a FIM template (`fim:`; declaring one means Turnout writes suffix into it,
  whatever the backend does with `suffix`); on a chat-only backend, an instruction (lossy).
- chat on a completion-only backend: a tokenizer (`tokenizer:`) for its chat template;
  tools, functions and structured output cannot be written into a prompt and are refused.
- `stream_options.include_usage` where streams carry no usage: a tokenizer to count with.
  Without one, `emulate` and `drop` stream without the usage chunk and list
  `stream_options.include_usage` in x-turnout-dropped; `strict` refuses it.
- token-id prompts and `logit_bias` are tokenizer-specific: they go only to the model's
  primary (first) deployment and to deployments declaring the same `tokenizer:` as it;
  any other deployment is skipped (a 400 naming `prompt` or `logit_bias` if none is left;
  `drop` mode drops `logit_bias` there instead).
- `echo` with `logprobs` on a backend without echo: vLLM's `prompt_logprobs`
  (`capabilities: {prompt_logprobs: true}`); elsewhere refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

from providers.capabilities import Capabilities
from providers.emulation import INCLUDE_USAGE, NOTHING_DECLARED, Declared, FimTemplate
from providers.local.tokenizer_cache import TokenizerCache
from providers.types import Endpoint


class Mode(StrEnum):
    EMULATE = "emulate"
    STRICT = "strict"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class Translation:
    """The body to send and what was done to get there (for the x-turnout-* headers);
    `declared` is what the chosen emulations may use."""

    body: Mapping[str, Any]
    emulated: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    clamped: tuple[str, ...] = ()
    declared: Declared = NOTHING_DECLARED


@dataclass(frozen=True, slots=True)
class Refusal:
    param: str
    message: str


@dataclass(slots=True)
class _Draft:
    body: dict[str, Any]
    mode: Mode
    emulable: set[str]
    declared: Declared
    emulated: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    clamped: list[str] = field(default_factory=list)

    def unsupported(self, param: str, what: str, droppable: bool = True) -> Refusal | None:
        """`param` is not native here: emulate, drop, or refuse, as the mode says. What
        cannot be dropped (the client is already owed a stream) is emulated when it can."""
        emulate = self.mode is Mode.EMULATE or (self.mode is Mode.DROP and not droppable)
        if emulate and param in self.emulable:
            self.emulated.append(param)
            return None
        if self.mode is Mode.DROP and droppable:
            self.body.pop(param, None)
            self.dropped.append(param)
            return None
        return Refusal(param, f"{what} is not supported by this deployment")

    def out_of_range(self, param: str, limit: float, what: str) -> Refusal | None:
        if self.mode is Mode.STRICT:
            return Refusal(param, f"{what} above {limit:g} is not supported by this deployment")
        self.body[param] = limit
        self.clamped.append(param)
        return None


Check = Callable[[_Draft, Capabilities, Endpoint], Refusal | None]


class DeclaresTraits(Protocol):
    """The part of a configured deployment the planner reads."""

    @property
    def fim(self) -> FimTemplate | None: ...

    @property
    def tokenizer(self) -> str | None: ...


def declared_for(
    deployment: DeclaresTraits, primary: DeclaresTraits, tokenizers: TokenizerCache
) -> Declared:
    """What `deployment` declares, and whether it shares the `primary` deployment's
    tokenizer (the one a request's token ids and logit_bias are written for)."""
    name = deployment.tokenizer
    return Declared(
        fim=deployment.fim,
        tokenizer=tokenizers.source(name) if name is not None else None,
        shares_tokenizer=deployment == primary or (name is not None and name == primary.tokenizer),
    )


def translate(
    endpoint: Endpoint,
    body: Mapping[str, Any],
    capabilities: Capabilities,
    mode: Mode,
    emulable: frozenset[str] = frozenset(),
    declared: Declared = NOTHING_DECLARED,
) -> Translation | Refusal:
    """How `capabilities` can serve `body`; `emulable` names the emulations on offer."""
    offered = set(emulable)
    if declared.fim is None:
        offered.discard("suffix")
    if declared.tokenizer is None:
        offered -= {"chat", INCLUDE_USAGE}
    draft = _Draft(dict(body), mode, offered, declared)
    if declared.fim is not None:
        capabilities = replace(capabilities, suffix=False)  # the template, not the backend's
    if not capabilities.serves(endpoint):
        converted = _through_other_endpoint(draft, capabilities, endpoint, emulable)
        if isinstance(converted, Refusal):
            return converted
        capabilities = converted
    for check in _CHECKS:
        refusal = check(draft, capabilities, endpoint)
        if refusal is not None:
            return refusal
    if not (draft.emulated or draft.dropped or draft.clamped):
        return Translation(body, declared=declared)
    return Translation(
        draft.body,
        tuple(draft.emulated),
        tuple(draft.dropped),
        tuple(draft.clamped),
        declared,
    )


def _through_other_endpoint(
    d: _Draft, c: Capabilities, endpoint: Endpoint, emulable: frozenset[str]
) -> Capabilities | Refusal:
    """Completions as one chat per prompt; chat as one prompt through the chat template.
    What the other endpoint lacks must then be emulated, dropped or refused too."""
    if d.mode is not Mode.STRICT:
        if endpoint is Endpoint.COMPLETIONS and c.chat and "completions" in d.emulable:
            d.emulated.append("completions")
            if "suffix" in emulable:
                d.emulable.add("suffix")  # as an instruction: no template needed
            # logprobs come from chat's top_logprobs.
            return replace(
                c,
                completions=True,
                echo=False,
                prompt_logprobs=False,
                best_of=False,
                suffix=False,
                max_logprobs=min(5, c.max_top_logprobs),
            )
        if endpoint is Endpoint.CHAT and c.completions and "chat" in d.emulable:
            d.emulated.append("chat")
            return replace(
                c, chat=True, tools=False, response_format=False, max_top_logprobs=c.max_logprobs
            )
    how = ""
    if endpoint is Endpoint.CHAT and c.completions and d.mode is not Mode.STRICT:
        how = " (declare its `tokenizer:` to serve chat through the model's chat template)"
    return Refusal("model", f"this deployment does not serve /v1/{endpoint.path[1:]}{how}")


def _stream(d: _Draft, c: Capabilities, _: Endpoint) -> Refusal | None:
    if not d.body.get("stream"):
        if c.non_streaming:
            return None
        if d.mode is Mode.STRICT or "non_streaming" not in d.emulable:
            return Refusal("stream", "this deployment only streams: send stream: true")
        d.emulated.append("non_streaming")  # cannot be dropped: the client awaits JSON
        return None
    if not c.stream:
        # The synthetic stream replays a whole answer, usage included.
        return d.unsupported("stream", "streaming", droppable=False)
    options = d.body.get("stream_options") or {}
    if options.get("include_usage") and not c.stream_usage:
        return _stream_usage(d, options)
    return None


def _stream_usage(d: _Draft, options: Mapping[str, Any]) -> Refusal | None:
    """Count with the declared tokenizer; without one, stream without usage and say so."""
    if d.mode is Mode.STRICT:
        return Refusal(INCLUDE_USAGE, "usage in streams is not supported by this deployment")
    if d.mode is Mode.EMULATE and INCLUDE_USAGE in d.emulable:
        d.emulated.append(INCLUDE_USAGE)
        return None
    rest = {k: v for k, v in options.items() if k != "include_usage"}
    if rest:
        d.body["stream_options"] = rest
    else:
        d.body.pop("stream_options", None)
    d.dropped.append(INCLUDE_USAGE)
    return None


def _n(d: _Draft, c: Capabilities, _: Endpoint) -> Refusal | None:
    n = d.body.get("n") or 1
    if n <= c.max_n:
        return None
    if (d.body.get("best_of") or 1) > 1 and d.mode is not Mode.DROP:
        # Fanning out n calls would give each call the whole best_of: another meaning.
        return Refusal("n", f"n={n} with best_of is not supported by this deployment")
    return d.unsupported("n", f"n={n}")


def _tokenizer_bound(d: _Draft, _: Capabilities, endpoint: Endpoint) -> Refusal | None:
    """Token ids and logit_bias mean something only to the tokenizer they were written for."""
    if d.declared.shares_tokenizer:
        return None
    why = (
        "is tokenizer-specific: only the model's primary deployment and deployments "
        "declaring the same `tokenizer:` take it"
    )
    if endpoint is Endpoint.COMPLETIONS and _has_token_ids(d.body):
        return Refusal("prompt", f"a token-id prompt {why}")
    if d.body.get("logit_bias"):
        if d.mode is not Mode.DROP:
            return Refusal("logit_bias", f"`logit_bias` {why}")
        d.body.pop("logit_bias")
        d.dropped.append("logit_bias")
    return None


def _suffix(d: _Draft, c: Capabilities, endpoint: Endpoint) -> Refusal | None:
    """`suffix` through the FIM template (or, on a chat-only backend, an instruction). The
    template's echo is not the caller's: echo is then answered by Turnout, without logprobs."""
    if endpoint is not Endpoint.COMPLETIONS or d.body.get("suffix") is None or c.suffix:
        return None
    refusal = d.unsupported("suffix", "`suffix`")
    echo_logprobs = d.body.get("echo") and d.body.get("logprobs") is not None
    if refusal is None and "suffix" in d.emulated and echo_logprobs:  # (drop mode dropped it)
        return Refusal("echo", "echo with logprobs cannot be combined with an emulated suffix")
    return refusal


def _completions_only(d: _Draft, c: Capabilities, endpoint: Endpoint) -> Refusal | None:
    """best_of and echo can be emulated only when what they need exists: logprobs to rank
    candidates; prompt logprobs when echo comes with logprobs."""
    if (d.body.get("best_of") or 1) > (d.body.get("n") or 1) and not c.best_of:
        if c.max_logprobs < 0 and d.mode is not Mode.DROP:
            return Refusal("best_of", "best_of needs logprobs, which this deployment lacks")
        refusal = d.unsupported("best_of", "`best_of`")
        if refusal is not None:
            return refusal
    if d.body.get("echo") and not c.echo:
        with_logprobs = d.body.get("logprobs") is not None or "best_of" in d.emulated
        if with_logprobs and not c.prompt_logprobs and d.mode is not Mode.DROP:
            return Refusal("echo", "echo with logprobs needs prompt logprobs")
        return d.unsupported("echo", "`echo`")
    return None


def _flags(d: _Draft, c: Capabilities, endpoint: Endpoint) -> Refusal | None:
    wanted = {
        "logit_bias": bool(d.body.get("logit_bias")) and not c.logit_bias,
        "seed": d.body.get("seed") is not None and not c.seed,
        "frequency_penalty": bool(d.body.get("frequency_penalty")) and not c.penalties,
        "presence_penalty": bool(d.body.get("presence_penalty")) and not c.penalties,
        "tools": bool(d.body.get("tools")) and not c.tools,
        "functions": bool(d.body.get("functions")) and not c.tools,
        "response_format": _structured(d.body) and not c.response_format,
    }
    for param, missing in wanted.items():
        if missing:
            refusal = d.unsupported(param, f"`{param}`")
            if refusal is not None:
                return refusal
    return None


def _logprobs(d: _Draft, c: Capabilities, endpoint: Endpoint) -> Refusal | None:
    value = d.body.get("logprobs")
    if endpoint is Endpoint.COMPLETIONS and isinstance(value, int) and value is not False:
        if c.max_logprobs < 0:
            return d.unsupported("logprobs", "`logprobs`")
        if value > c.max_logprobs:
            return d.out_of_range("logprobs", c.max_logprobs, "logprobs")
    if endpoint is Endpoint.CHAT and value is True:
        if c.max_top_logprobs < 0:
            return d.unsupported("logprobs", "`logprobs`")
        top = d.body.get("top_logprobs") or 0
        if top > c.max_top_logprobs:
            return d.out_of_range("top_logprobs", c.max_top_logprobs, "top_logprobs")
    return None


def _stop(d: _Draft, c: Capabilities, _: Endpoint) -> Refusal | None:
    stop = d.body.get("stop")
    count = 0 if stop is None else 1 if isinstance(stop, str) else len(stop)
    if count > c.max_stop:
        return d.unsupported("stop", f"{count} stop sequence(s)")
    return None


def _temperature(d: _Draft, c: Capabilities, _: Endpoint) -> Refusal | None:
    temperature = d.body.get("temperature")
    if temperature is not None and temperature > c.max_temperature:
        return d.out_of_range("temperature", c.max_temperature, "temperature")
    return None


def _text_prompts(d: _Draft, _: Capabilities, endpoint: Endpoint) -> Refusal | None:
    """Emulations that put the prompt into text (a chat, an echo, a template) need text."""
    needs_text = [e for e in ("completions", "echo", "suffix") if e in d.emulated]
    if endpoint is Endpoint.COMPLETIONS and needs_text and _has_token_ids(d.body):
        return Refusal(
            "prompt",
            f"token-id prompts cannot be used with {needs_text[0]} emulated: send text",
        )
    return None


def _has_token_ids(body: Mapping[str, Any]) -> bool:
    prompt = body.get("prompt")
    return isinstance(prompt, list) and any(isinstance(p, int | list) for p in prompt)


def _structured(body: Mapping[str, Any]) -> bool:
    response_format = body.get("response_format")
    return isinstance(response_format, dict) and response_format.get("type") != "text"


_CHECKS: tuple[Check, ...] = (
    _stream,
    _n,
    _tokenizer_bound,
    _suffix,
    _completions_only,
    _flags,
    _logprobs,
    _stop,
    _temperature,
    _text_prompts,
)
