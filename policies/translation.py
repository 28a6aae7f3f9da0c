"""Deciding, before any call, how one deployment can honour a request: natively, by an
emulation Turnout performs, by dropping or clamping what it cannot do — or not at all.

The caller chooses per model (config `translation:`) or per request
(`{"router": {"translation": ...}}`): `emulate` (default) emulates what Turnout can emulate
and clamps out-of-range values, refusing the rest; `strict` refuses anything not native;
`drop` removes what is not native (and clamps). A deployment that cannot honour a request
is skipped before it is called.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from providers.capabilities import Capabilities
from providers.types import Endpoint


class Mode(StrEnum):
    EMULATE = "emulate"
    STRICT = "strict"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class Translation:
    """The body to send and what was done to get there (for the x-turnout-* headers)."""

    body: Mapping[str, Any]
    emulated: tuple[str, ...] = ()
    dropped: tuple[str, ...] = ()
    clamped: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Refusal:
    param: str
    message: str


@dataclass(slots=True)
class _Draft:
    body: dict[str, Any]
    mode: Mode
    emulable: frozenset[str]
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


def translate(
    endpoint: Endpoint,
    body: Mapping[str, Any],
    capabilities: Capabilities,
    mode: Mode,
    emulable: frozenset[str] = frozenset(),
) -> Translation | Refusal:
    """How `capabilities` can serve `body`; `emulable` names the emulations on offer."""
    draft = _Draft(dict(body), mode, emulable)
    if not capabilities.serves(endpoint):
        via_chat = endpoint is Endpoint.COMPLETIONS and capabilities.chat
        if mode is Mode.STRICT or not via_chat or "completions" not in emulable:
            return Refusal("model", f"this deployment does not serve /v1/{endpoint.path[1:]}")
        # Each prompt becomes its own chat: completions-only options must be emulated too,
        # and logprobs come from chat's top_logprobs.
        draft.emulated.append("completions")
        capabilities = replace(
            capabilities,
            completions=True,
            echo=False,
            best_of=False,
            suffix=False,
            max_logprobs=min(5, capabilities.max_top_logprobs),
        )
    for check in _CHECKS:
        refusal = check(draft, capabilities, endpoint)
        if refusal is not None:
            return refusal
    if not (draft.emulated or draft.dropped or draft.clamped):
        return Translation(body)
    return Translation(
        draft.body, tuple(draft.emulated), tuple(draft.dropped), tuple(draft.clamped)
    )


def _stream(d: _Draft, c: Capabilities, _: Endpoint) -> Refusal | None:
    if d.body.get("stream") and not c.stream:
        return d.unsupported("stream", "streaming", droppable=False)
    options = d.body.get("stream_options") or {}
    if d.body.get("stream") and options.get("include_usage") and not c.stream_usage:
        return d.unsupported("stream_options", "usage in streams")
    return None


def _n(d: _Draft, c: Capabilities, _: Endpoint) -> Refusal | None:
    n = d.body.get("n") or 1
    if n <= c.max_n:
        return None
    if (d.body.get("best_of") or 1) > 1 and d.mode is not Mode.DROP:
        # Fanning out n calls would give each call the whole best_of: another meaning.
        return Refusal("n", f"n={n} with best_of is not supported by this deployment")
    return d.unsupported("n", f"n={n}")


def _completions_only(d: _Draft, c: Capabilities, endpoint: Endpoint) -> Refusal | None:
    """best_of and echo can be emulated only when what they need exists: logprobs to rank
    candidates; no prompt logprobs asked for (they cannot be made up)."""
    if (d.body.get("best_of") or 1) > (d.body.get("n") or 1) and not c.best_of:
        if c.max_logprobs < 0 and d.mode is not Mode.DROP:
            return Refusal("best_of", "best_of needs logprobs, which this deployment lacks")
        refusal = d.unsupported("best_of", "`best_of`")
        if refusal is not None:
            return refusal
    if d.body.get("echo") and not c.echo:
        if d.body.get("logprobs") is not None and d.mode is not Mode.DROP:
            return Refusal("echo", "echo with logprobs needs prompt logprobs")
        return d.unsupported("echo", "`echo`")
    return None


def _flags(d: _Draft, c: Capabilities, endpoint: Endpoint) -> Refusal | None:
    wanted = {
        "suffix": d.body.get("suffix") is not None and not c.suffix,
        "logit_bias": bool(d.body.get("logit_bias")) and not c.logit_bias,
        "seed": d.body.get("seed") is not None and not c.seed,
        "frequency_penalty": bool(d.body.get("frequency_penalty")) and not c.penalties,
        "presence_penalty": bool(d.body.get("presence_penalty")) and not c.penalties,
        "tools": bool(d.body.get("tools")) and not c.tools,
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


def _structured(body: Mapping[str, Any]) -> bool:
    response_format = body.get("response_format")
    return isinstance(response_format, dict) and response_format.get("type") != "text"


_CHECKS: tuple[Check, ...] = (
    _stream,
    _n,
    _completions_only,
    _flags,
    _logprobs,
    _stop,
    _temperature,
)
