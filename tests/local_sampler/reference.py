"""Independent answers to check the served model against: token ids recovered from what
the wire shows, prompt ids from the Hugging Face tokenizer, and log-probabilities from the
transformers model's own forward pass."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from providers.torch.loading import LoadedModel


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each byte's printable stand-in character."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    kept += range(ord("®"), ord("ÿ") + 1)
    chars = list(kept)
    shifted = 0
    for byte in range(256):
        if byte not in kept:
            kept.append(byte)
            chars.append(256 + shifted)
            shifted += 1
    return {byte: chr(char) for byte, char in zip(kept, chars, strict=True)}


_BYTE_TO_CHAR = _bytes_to_unicode()


def token_id(loaded: LoadedModel, raw: bytes) -> int:
    """The id of the byte-level BPE token whose bytes are `raw` (SmolLM2's vocabulary)."""
    piece = "".join(_BYTE_TO_CHAR[byte] for byte in raw)
    vocab: dict[str, int] = loaded.tokenizer.get_vocab()
    return vocab[piece]


def token_bytes(token: str) -> bytes:
    """A completions `logprobs.tokens` entry as bytes; part of a UTF-8 character is shown
    as `bytes:\\xe6\\x97`."""
    if token.startswith("bytes:"):
        return bytes(int(byte, 16) for byte in token.removeprefix("bytes:").split("\\x")[1:])
    return token.encode()


def text_token_ids(loaded: LoadedModel, tokens: Sequence[str]) -> list[int]:
    """Ids of the completions `logprobs.tokens`."""
    return [token_id(loaded, token_bytes(token)) for token in tokens]


def prompt_ids(loaded: LoadedModel, prompt: str) -> list[int]:
    ids: list[int] = loaded.tokenizer(prompt, add_special_tokens=False)["input_ids"]
    return ids


def chat_ids(loaded: LoadedModel, messages: Sequence[Mapping[str, object]]) -> list[int]:
    conversation: Any = [dict(message) for message in messages]
    rendered = loaded.tokenizer.apply_chat_template(
        conversation, add_generation_prompt=True, tokenize=False
    )
    assert isinstance(rendered, str)
    return prompt_ids(loaded, rendered)


def log_softmax(loaded: LoadedModel, ids: Sequence[int]) -> torch.Tensor:
    """[len(ids), V]: row i is the model's next-token distribution after ids[: i + 1]."""
    with torch.inference_mode():
        logits = loaded.model(torch.tensor([list(ids)])).logits[0].float()
    return torch.log_softmax(logits, dim=-1)
