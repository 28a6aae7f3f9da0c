"""The rendered prompt cut into fixed blocks of characters, each with a hash chained over
every block before it: two prompts share block i's hash only if they share the whole text
up to the end of block i (as a serving engine's prefix cache shares KV blocks).

The chain uses Python's built-in `hash` of `(previous, block)`: about 0.1 µs a block
against ~0.5 µs for a hashlib digest. It is randomized per process, which is fine: the
per-deployment record is this process's own and is never shared. What must agree across
processes (the rendezvous anchor, `prompt_cache_key`) is hashed with blake2b instead."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any


def prompt_text(body: Mapping[str, Any]) -> str:
    """What the deployment would prefill, in a form stable across turns: each message's
    role and text (chat), or the completions prompt (its first, for a batch of prompts).
    The Responses and Messages doors reach here as the chat request they run."""
    messages = body.get("messages")
    if isinstance(messages, list):
        return "".join(_message(m) for m in messages if isinstance(m, Mapping))
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        prompt = prompt[0] if prompt else ""
    return prompt if isinstance(prompt, str) else ""


def _message(message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(
            p["text"] for p in content if isinstance(p, Mapping) and isinstance(p.get("text"), str)
        )
    elif not isinstance(content, str):
        content = ""
    return f"\x1e{message.get('role', '')}\x1f{content}"


def chained_hashes(text: str, block_chars: int) -> tuple[int, ...]:
    """One hash per whole block (a trailing partial block is not cached by an engine either)."""
    hashes: list[int] = []
    previous = 0
    for start in range(0, len(text) - block_chars + 1, block_chars):
        previous = hash((previous, text[start : start + block_chars]))
        hashes.append(previous)
    return tuple(hashes)


def stable_digest(*parts: str) -> bytes:
    """A hash every Turnout process computes alike (unlike `hash`)."""
    return hashlib.blake2b("\x00".join(parts).encode(), digest_size=8).digest()
