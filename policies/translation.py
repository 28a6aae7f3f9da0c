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
- `stream_options.include_usage` where streams carry no usage: a tokenizer to count with
  (policies/stream_translation.py, which also asks every stream for its usage).
- token-id prompts and `logit_bias` are tokenizer-specific: they go only to the model's
  primary (first) deployment and to deployments declaring the same `tokenizer:` as it;
  any other deployment is skipped (a 400 naming `prompt` or `logit_bias` if none is left;
  `drop` mode drops `logit_bias` there instead).
- `echo` with `logprobs` on a backend without echo: vLLM's `prompt_logprobs`
  (`capabilities: {prompt_logprobs: true}`); elsewhere refused.

Values that mean nothing (`best_of` equal to `n`, an empty
`logit_bias` or `stop`) are removed for a backend that lacks the option, unreported.
A backend that translates only some body keys (`request_keys`, Anthropic) has any other key
refused before a call (dropped in drop mode). Chat options nothing can emulate
(`reasoning_effort`, audio, web search, prompt caching, ...): policies/translation_options.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from policies.stream_translation import stream_check, usage_after_a_cut
from policies.translation_draft import Check, Draft, Mode, Refusal
from policies.translation_options import chat_options
from providers.capabilities import Capabilities
from providers.emulation import INCLUDE_USAGE, NOTHING_DECLARED, Declared, FimTemplate
from providers.emulation.wrapper import include_usage
from providers.local.tokenizer_cache import TokenizerCache
from providers.types import Endpoint

__all__ = ["Mode", "Refusal", "Translation", "declared_for", "translate"]


@dataclass(frozen=True, slots=True)
class Translation:
    """The body to send and what was done to get there (for the x-turnout-* headers);
    `declared` is what the chosen emulations may use. `internal`: emulations Turnout runs
    for its own accounting, not reported (counting the usage of a stream whose client did
    not ask for it)."""

    body: Mapping[str, Any]
    emulated: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    clamped: tuple[str, ...] = ()
    declared: Declared = NOTHING_DECLARED
    internal: tuple[str, ...] = ()

    @property
    def applied(self) -> tuple[str, ...]:
        """Every emulation to stack, reported or not."""
        return self.emulated + self.internal


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
    draft = Draft(dict(body), mode, offered, declared, wants_usage=include_usage(body))
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
    changed = draft.emulated or draft.dropped or draft.clamped or draft.internal
    if not changed and draft.body == body:
        return Translation(body, declared=declared)
    return Translation(
        draft.body,
        tuple(draft.emulated),
        tuple(draft.dropped),
        tuple(draft.clamped),
        declared,
        tuple(draft.internal),
    )


def _through_other_endpoint(
    d: Draft, c: Capabilities, endpoint: Endpoint, emulable: frozenset[str]
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


def _n(d: Draft, c: Capabilities, endpoint: Endpoint) -> Refusal | None:
    """n beyond the backend's limit, or n > 1 greedy where the backend refuses that (vLLM),
    is fanned out; with best_of > n, by the best_of emulation, which keeps the best n."""
    n = d.body.get("n") or 1
    greedy = n > 1 and not c.greedy_n and _greedy(d.body)
    if n <= c.max_n and not greedy:
        return None
    what = f"n={n} with greedy sampling" if greedy else f"n={n}"
    best_of = d.body.get("best_of") or 1
    if endpoint is Endpoint.COMPLETIONS and best_of > 1 and d.mode is not Mode.DROP:
        # Calls of n=1 that each carried best_of would each rank their own candidates:
        # only the best_of emulation can fan out (best_of equal to n is native here).
        if d.mode is Mode.STRICT or best_of == n or not {"n", "best_of"} <= d.emulable:
            return Refusal("n", f"{what} with best_of is not supported by this deployment")
        if c.max_logprobs < 0:
            return Refusal("best_of", "best_of needs logprobs, which this deployment lacks")
        d.emulated += ["n", "best_of"]  # best_of calls of n=1, ranked by Turnout
        return None
    return d.unsupported("n", what)


def _greedy(body: Mapping[str, Any]) -> bool:
    temperature = body.get("temperature")
    return isinstance(temperature, int | float) and temperature < _GREEDY_BELOW


def _noops(d: Draft, c: Capabilities, endpoint: Endpoint) -> Refusal | None:
    """Values that change nothing are not sent to a backend that lacks the option (it may
    refuse them): best_of equal to n, an empty logit_bias, no stop string at all."""
    body = d.body
    best_of = body.get("best_of")
    idle = best_of is not None and (best_of or 1) <= (body.get("n") or 1)
    if endpoint is Endpoint.COMPLETIONS and idle and not c.best_of:
        body.pop("best_of")
    if "logit_bias" in body and not body["logit_bias"] and not c.logit_bias:
        body.pop("logit_bias")
    if "stop" in body and not _stops(body) and c.max_stop == 0:
        body.pop("stop")
    return None


def _tokenizer_bound(d: Draft, _: Capabilities, endpoint: Endpoint) -> Refusal | None:
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


def _suffix(d: Draft, c: Capabilities, endpoint: Endpoint) -> Refusal | None:
    """`suffix` through the FIM template (or, on a chat-only backend, an instruction). The
    template's echo is not the caller's: echo is then answered by Turnout, without logprobs."""
    if endpoint is not Endpoint.COMPLETIONS or d.body.get("suffix") is None or c.suffix:
        return None
    refusal = d.unsupported("suffix", "`suffix`")
    echo_logprobs = d.body.get("echo") and d.body.get("logprobs") is not None
    if refusal is None and "suffix" in d.emulated and echo_logprobs:  # (drop mode dropped it)
        return Refusal("echo", "echo with logprobs cannot be combined with an emulated suffix")
    return refusal


def _completions_only(d: Draft, c: Capabilities, endpoint: Endpoint) -> Refusal | None:
    """best_of and echo can be emulated only when what they need exists: logprobs to rank
    candidates; prompt logprobs when echo comes with logprobs."""
    best_of_needed = "best_of" not in d.emulated and not c.best_of
    if (d.body.get("best_of") or 1) > (d.body.get("n") or 1) and best_of_needed:
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


def _flags(d: Draft, c: Capabilities, endpoint: Endpoint) -> Refusal | None:
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


def _logprobs(d: Draft, c: Capabilities, endpoint: Endpoint) -> Refusal | None:
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


def _stop(d: Draft, c: Capabilities, endpoint: Endpoint) -> Refusal | None:
    """More stop strings than the backend takes, or whitespace-only ones where it refuses
    them (Anthropic): matched by Turnout. Drop mode drops only the ones it refuses."""
    blank = not c.whitespace_stop and any(not s.strip() for s in _stops(d.body))
    if blank and d.mode is Mode.DROP:
        kept = [s for s in _stops(d.body) if s.strip()]
        d.body["stop"] = kept
        d.dropped.append("stop")
        blank = False
    stop = d.body.get("stop")
    count = 0 if stop is None else 1 if isinstance(stop, str) else len(stop)
    if count <= c.max_stop and not blank:
        return None
    what = "whitespace-only stop sequences" if blank else f"{count} stop sequence(s)"
    refusal = d.unsupported("stop", what)
    streamed = d.body.get("stream") and "stream" not in d.emulated
    if refusal is None and "stop" in d.emulated and streamed:
        usage_after_a_cut(d)
    return refusal


def _stops(body: Mapping[str, Any]) -> list[str]:
    """The stop strings that mean something (an empty one matches nothing)."""
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    return [s for s in stops if isinstance(s, str) and s]


def _temperature(d: Draft, c: Capabilities, _: Endpoint) -> Refusal | None:
    temperature = d.body.get("temperature")
    # A door whose schema has no `temperature` (embeddings) passes any value on: only a
    # number is compared here, the rest is for the unknown-keys step or the backend.
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        return None
    if temperature > c.max_temperature:
        return d.out_of_range("temperature", c.max_temperature, "temperature")
    return None


def _unknown_keys(d: Draft, c: Capabilities, endpoint: Endpoint) -> Refusal | None:
    """Keys the adapter cannot translate (for an adapter that names the ones it can)."""
    if c.request_keys is None:
        return None
    known = c.request_keys | (_CONVERTED if "completions" in d.emulated else frozenset())
    for key in [k for k, v in d.body.items() if k not in known and v is not None]:
        refusal = d.unsupported(key, f"`{key}`")
        if refusal is not None:
            return refusal
    return None


def _text_prompts(d: Draft, _: Capabilities, endpoint: Endpoint) -> Refusal | None:
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


_GREEDY_BELOW = 1e-5  # vLLM's rule: a lower temperature samples greedily
# Completions fields the completions-through-chat emulation turns into chat's.
_CONVERTED = frozenset({"prompt", "echo", "suffix", "best_of", "logprobs"})

_CHECKS: tuple[Check, ...] = (
    stream_check,
    _noops,
    _n,
    _tokenizer_bound,
    _suffix,
    _completions_only,
    _flags,
    chat_options,
    _logprobs,
    _stop,
    _temperature,
    _unknown_keys,
    _text_prompts,
)
