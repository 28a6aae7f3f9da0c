"""How many upstream calls a deployment's emulations make for one request, known before
any call, so that admission can charge for every one of them.

A backend without native `n` is sent n calls of `n: 1` (`best_of` candidates likewise),
and each call reads — and is billed for — the whole prompt; a completions batch on a
chat-only backend is one chat per prompt, each reading its own prompt. So the prompt is
read once per fanned-out candidate (`prompt_reads`), and the completion tokens are the
same as natively. Calls run at most `emulation.max_parallel` at a time
(providers/emulation/bounded.py), and one request makes at most `emulation.max_calls` of
them: a deployment whose emulations would make more is skipped, as one that cannot
honour the request is, and with none left the request is refused with a 400 naming what
multiplies the calls (`n`, `best_of`, or a batch's `prompt`) before any call is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from policies.translation import Refusal, Translation
from providers.types import Endpoint


@dataclass(frozen=True, slots=True)
class UpstreamCalls:
    calls: int  # upstream calls made for the request
    prompt_reads: int  # how many times those calls read the whole prompt


ONE_CALL = UpstreamCalls(1, 1)
# Upstream calls one request's emulations may make in all (`emulation: {max_calls: ...}`).
DEFAULT_MAX_CALLS = 128


def may_fan_out(body: Mapping[str, Any]) -> bool:
    """Whether any deployment could turn this request into several calls reading the
    prompt each (only `n` or `best_of` above 1 do), or into one call per prompt of a
    batch: the cheap test before planning."""
    return _count(body.get("n")) > 1 or _count(body.get("best_of")) > 1 or _prompts(body) > 1


def too_many_calls(body: Mapping[str, Any], calls: UpstreamCalls, max_calls: int) -> Refusal | None:
    """Why a deployment making `calls` for `body` cannot take the request: more calls than
    `max_calls`, named by what multiplies them (the candidates, else the batch's prompts);
    None when it is within the bound."""
    if calls.calls <= max_calls:
        return None
    n, best_of = _count(body.get("n")), _count(body.get("best_of"))
    param = "prompt"  # the batch's prompts multiply the calls
    if calls.prompt_reads > max_calls:  # the candidates alone are too many
        param = "best_of" if best_of > n else "n"
    return Refusal(
        param,
        f"emulated with {calls.calls} upstream calls, more than the {max_calls} one request "
        "may make (emulation.max_calls)",
        droppable=False,
    )


def upstream_calls(
    endpoint: Endpoint, translation: Translation, max_native_n: int = 1
) -> UpstreamCalls:
    """The calls `translation`'s emulations make: `n` fanned out, one per candidate, each
    reading the whole prompt; `best_of` likewise, unless the backend's own `n` (at most
    `max_native_n`) yields the candidates in one call; completions through chat, one per
    prompt."""
    applied = translation.applied
    body = translation.body
    candidates = max(_count(body.get("n")), _count(body.get("best_of")))
    best_of_fanned = "best_of" in applied and candidates > max_native_n
    fanned = candidates if "n" in applied or best_of_fanned else 1
    prompts = _prompts(body) if endpoint is Endpoint.COMPLETIONS and "completions" in applied else 1
    if fanned == 1 and prompts == 1:
        return ONE_CALL
    return UpstreamCalls(fanned * prompts, fanned)


def _prompts(body: Mapping[str, Any]) -> int:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and not all(isinstance(t, int) for t in prompt):
        return len(prompt)
    return 1


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 1


def prompt_reads(endpoint: Endpoint, translation: Translation | None) -> int:
    """How many times the calls made under `translation` read the prompt (None: one
    call, as nothing was emulated). For a stream, which never ranks best_of candidates."""
    return 1 if translation is None else upstream_calls(endpoint, translation).prompt_reads
