"""A serving engine's prefix (KV) cache, modelled the way vLLM's and SGLang's work: the
prompt is cut into fixed-size blocks, each named by the hash of its text chained with the
previous block's hash (so a block is reusable only after the same whole prefix), and the
cache holds at most `capacity` blocks, evicting the least recently used.

Used by `tests.fakes.replica_pool`; blocks are counted in characters of the rendered
prompt, and a token is taken to be 4 characters (`tokens_of`)."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any

CHARS_PER_TOKEN = 4


def tokens_of(chars: int) -> int:
    return -(-chars // CHARS_PER_TOKEN)


def render_prompt(body: Mapping[str, Any]) -> str:
    """The text a chat or completions request is prefilled from: each message as
    `<|role|>content`, or the completions prompt (a list of prompts: the first)."""
    messages = body.get("messages")
    if isinstance(messages, list):
        parts = []
        for message in messages:
            if not isinstance(message, Mapping):
                continue
            content = message.get("content")
            if isinstance(content, list):  # content parts: their text, in order
                content = "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
            parts.append(f"<|{message.get('role', '')}|>{content or ''}")
        return "".join(parts)
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        prompt = prompt[0] if prompt else ""
    return str(prompt)


def block_hashes(text: str, block_chars: int) -> Iterator[bytes]:
    """Chained hashes of `text`'s whole blocks (a trailing partial block is never cached,
    as in vLLM)."""
    previous = b""
    for start in range(0, len(text) - block_chars + 1, block_chars):
        block = text[start : start + block_chars].encode()
        previous = hashlib.blake2b(previous + block, digest_size=12).digest()
        yield previous


class PrefixCache:
    """LRU over chained block hashes, `capacity` blocks at most."""

    def __init__(self, capacity: int, block_chars: int) -> None:
        self.capacity = capacity
        self.block_chars = block_chars
        self._blocks: OrderedDict[bytes, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._blocks)

    def admit(self, text: str) -> tuple[int, int]:
        """Prefill `text`: (its whole blocks, how many of the leading ones were cached).
        Every block is then cached (most recent last), older ones evicted past capacity."""
        hashes = list(block_hashes(text, self.block_chars))
        hit = 0
        for digest in hashes:
            if digest not in self._blocks:
                break
            hit += 1
        for digest in hashes:
            self._blocks[digest] = None
            self._blocks.move_to_end(digest)
        while len(self._blocks) > self.capacity:
            self._blocks.popitem(last=False)
        return len(hashes), hit

    def cached_prefix_blocks(self, text: str) -> int:
        """How many of `text`'s leading blocks are cached now (no change to the LRU)."""
        hit = 0
        for digest in block_hashes(text, self.block_chars):
            if digest not in self._blocks:
                break
            hit += 1
        return hit

    def clear(self) -> None:
        self._blocks.clear()
