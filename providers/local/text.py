"""Generated text, token by token: incremental detokenization and stop-string matching.

`IncrementalDetokenizer` turns sampled token ids into text as they arrive, decoding only a
sliding window of the last few tokens (the prefix-offset / read-offset technique of TGI and
vLLM), so each token costs O(1) and leading-space rules of SentencePiece and byte-level BPE
decoders come out as in a full decode. It never emits text that ends in half a UTF-8
character. `StopMatcher` finds stop strings across token boundaries and, for streaming,
says how much text is safe to send; `StopFilter` applies it to a stream of text deltas.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

_REPLACEMENT = "\ufffd"
# Prompt tokens kept as the first decode window: enough context for the first generated
# token's leading space, and for a UTF-8 character the prompt's last token started.
_PROMPT_WINDOW = 4
# A UTF-8 character has at most 4 bytes and every token carries at least one, so a window
# that still ends mid-character after this many pending tokens holds invalid bytes: emit it
# (with U+FFFD, as a full decode would show it) rather than let the window grow.
_MAX_PENDING_TOKENS = 4


class TokenDecoder(Protocol):
    """The part of a transformers tokenizer the detokenizer uses."""

    def decode(self, token_ids: list[int], **kwargs: Any) -> Any: ...


class IncrementalDetokenizer:
    """Feed generated token ids one at a time; get back each newly completed piece of text.

    The window `ids[prefix:read]` was decoded and emitted last time; `ids[read:]` is pending.
    New text is `decode(ids[prefix:]) - decode(ids[prefix:read])`, held back while it ends
    in U+FFFD (a character whose remaining bytes have not arrived yet).
    """

    __slots__ = ("_decode_kwargs", "_ids", "_read", "_tokenizer")

    def __init__(
        self,
        tokenizer: TokenDecoder,
        prefix_ids: Sequence[int] = (),
        *,
        skip_special_tokens: bool = True,
    ) -> None:
        self._tokenizer = tokenizer
        self._decode_kwargs: dict[str, Any] = {
            "skip_special_tokens": skip_special_tokens,
            "clean_up_tokenization_spaces": False,
        }
        self._ids = list(prefix_ids[-_PROMPT_WINDOW:])  # the window starts at index 0
        self._read = len(self._ids)

    def _decode(self, ids: list[int]) -> str:
        text = self._tokenizer.decode(ids, **self._decode_kwargs)
        if not isinstance(text, str):
            raise TypeError(f"tokenizer.decode returned {type(text).__name__}, not str")
        return text

    def feed(self, token: int) -> str:
        """Add one token; return the text it completes (often "", never half a character)."""
        self._ids.append(token)
        pending = len(self._ids) - self._read
        prefix_text = self._decode(self._ids[: self._read]) if self._read else ""
        full_text = self._decode(self._ids)
        if full_text.endswith(_REPLACEMENT) and pending <= _MAX_PENDING_TOKENS:
            return ""
        return self._advance(prefix_text, full_text)

    def flush(self) -> str:
        """Return whatever is still held back (at the end of generation), U+FFFD included."""
        if self._read == len(self._ids):
            return ""
        prefix_text = self._decode(self._ids[: self._read]) if self._read else ""
        return self._advance(prefix_text, self._decode(self._ids))

    def _advance(self, prefix_text: str, full_text: str) -> str:
        # The emitted-but-pending tokens become the next prefix window.
        del self._ids[: self._read]
        self._read = len(self._ids)
        return full_text[len(prefix_text) :]


@dataclass(frozen=True, slots=True)
class StopMatch:
    """A stop string found in the text: where it starts and which one it is."""

    start: int
    stop: str


class StopMatcher:
    """Finds the earliest stop string in generated text, including ones spanning tokens.

    Empty stop strings are ignored (they would match before any text). Checked after every
    token, as the engine does, the earliest match start wins; the output excludes the stop
    string and anything after it.
    """

    __slots__ = ("max_len", "stops")

    def __init__(self, stops: Iterable[str]) -> None:
        self.stops: tuple[str, ...] = tuple(dict.fromkeys(s for s in stops if s))
        self.max_len = max((len(s) for s in self.stops), default=0)

    def __bool__(self) -> bool:
        return bool(self.stops)

    def find(self, text: str, new_chars: int) -> StopMatch | None:
        """The earliest stop in `text` that involves its last `new_chars` characters.

        Text before those was checked already, so the search starts at
        `len(text) - new_chars - max_len + 1`: the first place a stop ending in the new
        characters can begin.
        """
        begin = max(0, len(text) - new_chars - self.max_len + 1)
        best: StopMatch | None = None
        for stop in self.stops:
            at = text.find(stop, begin)
            if at >= 0 and (best is None or at < best.start):
                best = StopMatch(at, stop)
        return best

    def check(self, text: str, new_chars: int) -> tuple[str, bool]:
        """`(text to keep, stopped)`: `text` cut before the earliest stop, if any."""
        match = self.find(text, new_chars)
        if match is None:
            return text, False
        return text[: match.start], True

    def safe_prefix_length(self, text: str) -> int:
        """How much of `text` can be sent now: all but a suffix that could begin a stop."""
        for start in range(max(0, len(text) - self.max_len + 1), len(text)):
            tail = text[start:]
            if any(stop.startswith(tail) for stop in self.stops):
                return start
        return len(text)


class StopFilter:
    """Applies a `StopMatcher` to a stream of text deltas, one push per generated token.

    `push` returns the text that can be sent now; `finish` returns what was held back at the
    end of generation. Their concatenation equals `text`, what a non-streaming response
    returns. Only the last `max_len - 1` characters are searched again, so each push costs
    O(len(delta) + max_len) rather than O(len(text)).
    """

    __slots__ = ("_emitted", "_emitted_len", "_length", "_matcher", "_recent", "stop")

    def __init__(self, matcher: StopMatcher) -> None:
        self._matcher = matcher
        self._emitted: list[str] = []
        self._emitted_len = 0
        self._length = 0  # characters of text so far (cut at the stop once stopped)
        self._recent = ""  # the last max_len - 1 characters of text: where a stop can begin
        self.stop: str | None = None  # the stop string that ended the text, if any

    @property
    def stopped(self) -> bool:
        return self.stop is not None

    @property
    def text(self) -> str:
        """All text so far, held-back characters included, cut before a matched stop."""
        return "".join(self._emitted) + self._held()

    def _held(self) -> str:
        base = self._length - len(self._recent)
        return self._recent[self._emitted_len - base :]

    def push(self, delta: str) -> str:
        """Add the text of one token; return what can be sent now (nothing once stopped)."""
        if self.stopped or not delta:
            return ""
        buffer = self._recent + delta
        base = self._length - len(self._recent)  # position of buffer[0] in the whole text
        match = self._matcher.find(buffer, len(delta))
        if match is not None:
            self.stop = match.stop
            buffer = buffer[: match.start]
            send_to = len(buffer)
        else:
            send_to = self._matcher.safe_prefix_length(buffer)
        sent = buffer[self._emitted_len - base : send_to]
        self._emitted.append(sent)
        self._emitted_len += len(sent)
        self._length = base + len(buffer)
        keep = self._matcher.max_len - 1
        self._recent = buffer[-keep:] if keep > 0 else ""
        return sent

    def finish(self) -> str:
        """Send everything still held back (the end of generation, no stop matched)."""
        held = self._held()
        self._emitted.append(held)
        self._emitted_len += len(held)
        return held
