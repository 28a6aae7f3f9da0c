"""The token ids of the last few prompt texts a tokenizer encoded, keyed by the text.

Affinity routing asks a local deployment how much of a prompt its prefix store holds
before it sends the request (`LocalGenerator.cached_prompt_tokens`), and that renders and
tokenizes the prompt; the request then renders it again. Templating is cheap; tokenizing
is not (~5 ms for 1,400 tokens here). Keyed by the rendered text itself, the request finds
the probe's ids: the same text always has the same ids, so a hit can never be wrong,
whatever rendered it. A few entries suffice (the probe and its request follow each other
closely), and texts far longer than any context are not kept, so the memory is bounded:
at most `entries` texts of at most `longest` characters, and their ids."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_ENTRIES = 16
DEFAULT_LONGEST = 65_536  # characters: ~16k tokens, past any context the samplers take


class RecentEncodings:
    """Least recently used first out; safe to share between worker threads."""

    def __init__(self, entries: int = DEFAULT_ENTRIES, longest: int = DEFAULT_LONGEST) -> None:
        self._entries = entries
        self._longest = longest
        self._held: OrderedDict[str, tuple[int, ...]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0  # texts found held (tests count them)

    def __len__(self) -> int:
        return len(self._held)

    def encode(self, text: str, encode: Callable[[str], list[int]]) -> list[int]:
        """`encode(text)`, or the ids it gave for the same text lately (a new list)."""
        if len(text) > self._longest or self._entries < 1:
            return encode(text)
        with self._lock:
            held = self._held.get(text)
            if held is not None:
                self._held.move_to_end(text)
                self.hits += 1
                return list(held)
        ids = encode(text)  # outside the lock: other threads encode meanwhile
        with self._lock:
            self._held[text] = tuple(ids)
            self._held.move_to_end(text)
            while len(self._held) > self._entries:
                self._held.popitem(last=False)
        return ids
