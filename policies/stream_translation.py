"""The translation checks about streams: streaming and whole answers where the backend
has only one of them, and usage in streams.

Every stream carries usage upstream, asked for or not, because limits and budgets settle on
it: `stream_options.include_usage` is added where streamed usage is native (and for a
synthetic stream, which replays a whole answer's usage), and the usage is counted with the
declared tokenizer where it is not native. router/sse.py strips the usage chunk from a
client that did not ask for it. Without a tokenizer, a backend without streamed usage
streams without it, and the client that asked is told in x-turnout-dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from policies.translation_draft import Draft, Mode, Refusal
from providers.capabilities import Capabilities
from providers.emulation import INCLUDE_USAGE
from providers.emulation.wrapper import include_usage
from providers.types import Endpoint


def stream_check(d: Draft, c: Capabilities, _: Endpoint) -> Refusal | None:
    if not d.body.get("stream"):
        if c.non_streaming:
            return None
        if d.mode is Mode.STRICT or "non_streaming" not in d.emulable:
            return Refusal("stream", "this deployment only streams: send stream: true")
        d.emulated.append("non_streaming")  # cannot be dropped: the client awaits JSON
        return None
    if not c.stream:
        # The synthetic stream replays a whole answer, usage included.
        refusal = d.unsupported("stream", "streaming", droppable=False)
        if refusal is None:
            ask_usage(d)
        return refusal
    options = d.body.get("stream_options") or {}
    if c.stream_usage:
        ask_usage(d)
    elif d.wants_usage:
        return _stream_usage(d, options)
    elif INCLUDE_USAGE in d.emulable:  # a tokenizer is declared: count for Turnout alone
        d.internal.append(INCLUDE_USAGE)
        ask_usage(d)
    return None


def ask_usage(d: Draft) -> None:
    """Every stream ends with its usage: the limits settle on it. The client that did not
    ask for it never sees it (router/sse.py)."""
    if not include_usage(d.body):
        options = d.body.get("stream_options") or {}
        d.body["stream_options"] = {**options, "include_usage": True}


def _stream_usage(d: Draft, options: Mapping[str, Any]) -> Refusal | None:
    """Count with the declared tokenizer; without one, stream without usage and say so."""
    if d.mode is Mode.STRICT:
        return Refusal(INCLUDE_USAGE, "usage in streams is not supported by this deployment")
    if d.mode is Mode.EMULATE and INCLUDE_USAGE in d.emulable:
        d.emulated.append(INCLUDE_USAGE)
        return None
    _unask_usage(d, options)
    d.dropped.append(INCLUDE_USAGE)
    return None


def _unask_usage(d: Draft, options: Mapping[str, Any]) -> None:
    rest = {k: v for k, v in options.items() if k != "include_usage"}
    if rest:
        d.body["stream_options"] = rest
    else:
        d.body.pop("stream_options", None)


def usage_after_a_cut(d: Draft) -> None:
    """A stream cut at a stop string ends before the backend's usage chunk: it is counted
    with the declared tokenizer, or else missing — which the client that asked is told."""
    if d.declared.tokenizer is None and d.wants_usage and INCLUDE_USAGE not in d.dropped:
        d.dropped.append(INCLUDE_USAGE)
