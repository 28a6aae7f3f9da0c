"""What a client has been sent of a stream, per choice, and the seam where a continuation's
output joins it (policies/continuation.py decides when a stream is continued).

The seam's rules, in order, on the continuation's text for one choice:
1. Held-back whitespace. A chat continuation's prefill is the text sent with its trailing
   whitespace left out (Anthropic refuses a prefill ending in whitespace, and a prompt
   ending in a space tokenizes badly everywhere); the client already has that whitespace.
   The continuation's leading characters that repeat it, one for one, are dropped; at the
   first character that differs nothing more is dropped. So "Hello " + " world" joins as
   "Hello world", and "Hello " + "world" also as "Hello world" (the whitespace is kept).
2. Stop strings across the seam. A stop string that begins in the text already sent and
   ends in the continuation cannot be seen by the backend, which has the prefill only as
   input: Turnout holds the continuation's first characters back until no such match is
   possible any more. On a match the choice ends there with `finish_reason: stop`; the part
   of the stop string already sent cannot be taken back. A stop string wholly inside the
   continuation is the backend's to match (the continuation keeps the request's `stop`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from providers.types import Endpoint, JSONObject

# Chat delta keys a continued choice may have sent: anything else (tool calls, a refusal,
# reasoning, audio) cannot be written into an assistant prefill.
_PLAIN_DELTA_KEYS = frozenset({"role", "content"})


@dataclass(slots=True)
class ChoiceSent:
    """One choice as the client has it so far."""

    pieces: list[str] = field(default_factory=list)  # joined only when it is continued
    tokens: int = 0  # generated tokens relayed: chunks with text, or logprob entries
    finished: bool = False
    other: str | None = None  # why it cannot be continued (it sent a tool call, ...)

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def record(sent: dict[int, ChoiceSent], chunk: Mapping[str, Any], endpoint: Endpoint) -> None:
    """Add what `chunk` gives the client to `sent`."""
    choices = chunk.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, Mapping):
            continue
        index = choice.get("index", 0)
        state = sent.setdefault(index if isinstance(index, int) else 0, ChoiceSent())
        text = _text(choice, endpoint)
        if text:
            state.pieces.append(text)
            state.tokens += max(1, _logprob_tokens(choice.get("logprobs"), endpoint))
        if endpoint is Endpoint.CHAT:
            delta = choice.get("delta")
            extra = [
                k for k, v in (delta.items() if isinstance(delta, Mapping) else ())
                if v and k not in _PLAIN_DELTA_KEYS
            ]  # fmt: skip
            if extra and state.other is None:
                calls = "tool_calls" in extra or "function_call" in extra
                state.other = "a tool call" if calls else f"`{extra[0]}` output"
        if choice.get("finish_reason"):
            state.finished = True


def text_slot(choice: JSONObject, endpoint: Endpoint) -> tuple[JSONObject, str]:
    """Where a chunk's choice keeps its text: (the object holding it, its key)."""
    if endpoint is not Endpoint.CHAT:
        return choice, "text"
    delta = choice.get("delta")
    if not isinstance(delta, dict):
        delta = choice["delta"] = {}
    return delta, "content"


def _text(choice: Mapping[str, Any], endpoint: Endpoint) -> str:
    holder = choice if endpoint is not Endpoint.CHAT else choice.get("delta")
    text = holder.get("text" if endpoint is not Endpoint.CHAT else "content") if holder else None
    return text if isinstance(text, str) else ""


def _logprob_tokens(logprobs: Any, endpoint: Endpoint) -> int:
    if not isinstance(logprobs, Mapping):
        return 0
    entries = logprobs.get("content" if endpoint is Endpoint.CHAT else "tokens")
    return len(entries) if isinstance(entries, list) else 0


class Seam:
    """Joins one continuation's text to what its choice already sent (module docstring)."""

    __slots__ = ("_held", "_open", "_pending", "_sent", "_stops")

    def __init__(self, sent: str, held: str, stops: Sequence[str]) -> None:
        """`sent`: the text the client has; `held`: its trailing whitespace the prefill
        left out; `stops`: the request's stop strings."""
        self._sent = sent
        self._held = held
        self._stops = tuple(s for s in stops if len(s) > 1)  # a 1-char stop cannot straddle
        self._open = bool(self._stops)
        self._pending = ""

    def push(self, text: str) -> tuple[str, bool]:
        """(the text to send now, whether a stop string across the seam ended the choice)."""
        text = self._skip_held(text)
        if not self._open or not text:
            return text, False
        self._pending += text
        possible = False
        for stop in self._stops:
            for k in range(1, len(stop)):
                if not self._sent.endswith(stop[:k]):
                    continue
                rest = stop[k:]
                if self._pending.startswith(rest):
                    self._open, self._pending = False, ""
                    return "", True
                possible = possible or rest.startswith(self._pending)
        if possible:
            return "", False
        out, self._pending, self._open = self._pending, "", False
        return out, False

    def finish(self) -> str:
        """What is still held back when the choice ends (it matched no stop string)."""
        out, self._pending, self._open = self._pending, "", False
        return out

    def _skip_held(self, text: str) -> str:
        skip = 0
        while self._held and skip < len(text):
            if text[skip] != self._held[0]:
                self._held = ""
                break
            self._held = self._held[1:]
            skip += 1
        return text[skip:]


def stop_strings(body: Mapping[str, Any]) -> tuple[str, ...]:
    stop = body.get("stop")
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list):
        return tuple(s for s in stop if isinstance(s, str) and s)
    return ()
