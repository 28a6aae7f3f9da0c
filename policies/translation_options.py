"""The chat options no emulation can stand in for, on a deployment that lacks them.

Options that change what the answer is (`reasoning_effort`, `verbosity`, audio output,
`web_search_options`, `moderation`, custom tools and the tool choices that go with them)
are refused, so the request goes to a deployment that has them, unless the caller chose
`drop`. Options that only tune cost, latency or bookkeeping (`prediction`, `service_tier`,
`store`, prompt caching, `safety_identifier`) leave a correct answer behind when dropped:
`emulate` drops them too, and says so. `strict` refuses both kinds. Values that ask for
nothing (`store: false`, text-only `modalities`, the default `service_tier`) are removed,
unreported, as the planner's other no-ops are.
"""

from __future__ import annotations

from typing import Any

from policies.translation_draft import Draft, Mode, Refusal
from providers.capabilities import Capabilities
from providers.types import Endpoint

# Body key → (capability field, whether the answer differs without it).
_OPTIONS: dict[str, tuple[str, bool]] = {
    "reasoning_effort": ("reasoning_effort", True),
    "verbosity": ("verbosity", True),
    "modalities": ("audio", True),
    "audio": ("audio", True),
    "web_search_options": ("web_search", True),
    "moderation": ("moderation", True),
    "prediction": ("prediction", False),
    "service_tier": ("service_tier", False),
    "store": ("store", False),
    "prompt_cache_key": ("prompt_cache", False),
    "prompt_cache_retention": ("prompt_cache", False),
    "prompt_cache_options": ("prompt_cache", False),
    "safety_identifier": ("safety_identifier", False),
}
_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "store": (False,),
    "modalities": ([], ["text"]),
    "service_tier": ("auto", "default"),
}
# Tool choices that came with custom tools, and need the same support.
_NEWER_CHOICES = frozenset({"custom", "allowed_tools"})


def chat_options(d: Draft, c: Capabilities, endpoint: Endpoint) -> Refusal | None:
    """Each option this deployment lacks: refused, dropped or removed, as said above. Chat
    served through a completions backend's template has none of them."""
    if endpoint is not Endpoint.CHAT:
        return None
    templated = "chat" in d.emulated
    for key, (flag, changes_answer) in _OPTIONS.items():
        value = d.body.get(key)
        if value is None or (getattr(c, flag) and not templated):
            continue
        if value in _NEUTRAL.get(key, ()):
            d.body.pop(key)
            continue
        refusal = _lacking(d, key, changes_answer)
        if refusal is not None:
            return refusal
    if c.custom_tools and not templated:
        return None
    return _custom_tools(d)


def _lacking(d: Draft, key: str, changes_answer: bool) -> Refusal | None:
    if d.mode is Mode.EMULATE and not changes_answer:
        d.body.pop(key)
        d.dropped.append(key)
        return None
    return d.unsupported(key, f"`{key}`")


def _custom_tools(d: Draft) -> Refusal | None:
    """Custom (free-text) tools, and `allowed_tools` or custom tool choices: drop mode drops
    just those, keeping the function tools (and no choice is left without its tools)."""
    tools = d.body.get("tools") or []
    custom = [t for t in tools if isinstance(t, dict) and t.get("type") == "custom"]
    choice = d.body.get("tool_choice")
    newer_choice = isinstance(choice, dict) and choice.get("type") in _NEWER_CHOICES
    if _custom_calls(d.body.get("messages")):  # the conversation itself: nothing to drop
        return Refusal("messages", "custom tool calls are not supported by this deployment")
    if custom:
        if d.mode is not Mode.DROP:
            return Refusal("tools", "custom tools are not supported by this deployment")
        kept = [t for t in tools if t not in custom]
        d.body["tools"] = kept
        d.dropped.append("tools")
        if not kept:
            d.body.pop("tools")
            newer_choice = choice is not None
    if newer_choice:
        return d.unsupported("tool_choice", "this `tool_choice`")
    return None


def _custom_calls(messages: Any) -> bool:
    """Whether an assistant turn of the conversation called a custom tool."""
    turns = [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []
    calls = [call for turn in turns for call in turn.get("tool_calls") or ()]
    return any(isinstance(call, dict) and call.get("type") == "custom" for call in calls)
