"""Chat logprobs in completions' format: four parallel arrays instead of token objects.

Chat gives `{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}]}`;
completions wants `tokens`, `token_logprobs`, `top_logprobs` (one `{token: logprob}` dict
per position, the sampled token always among them) and `text_offset` (where each token
starts in the returned text, counted from its token strings).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from providers.types import JSONObject


def text_logprobs(chat_logprobs: Any, offset: int = 0) -> JSONObject | None:
    """Completions logprobs for one choice's chat logprobs; offsets start at `offset`."""
    if not isinstance(chat_logprobs, Mapping):
        return None
    content = chat_logprobs.get("content")
    if not isinstance(content, list):
        return None
    tokens: list[str] = []
    token_logprobs: list[Any] = []
    top_logprobs: list[dict[str, Any]] = []
    text_offset: list[int] = []
    for entry in content:
        if not isinstance(entry, Mapping):
            continue
        token = entry.get("token")
        token = token if isinstance(token, str) else ""
        top = {
            alt["token"]: alt.get("logprob")
            for alt in entry.get("top_logprobs") or []
            if isinstance(alt, Mapping) and isinstance(alt.get("token"), str)
        }
        top.setdefault(token, entry.get("logprob"))
        tokens.append(token)
        token_logprobs.append(entry.get("logprob"))
        top_logprobs.append(top)
        text_offset.append(offset)
        offset += len(token)
    return {
        "tokens": tokens,
        "token_logprobs": token_logprobs,
        "top_logprobs": top_logprobs,
        "text_offset": text_offset,
    }


class LogprobOffsets:
    """Streamed choices: each index's text offsets continue where its last chunk ended."""

    def __init__(self) -> None:
        self.next: dict[int, int] = {}

    def map(self, index: int, chat_logprobs: Any) -> JSONObject | None:
        mapped = text_logprobs(chat_logprobs, self.next.get(index, 0))
        if mapped is not None:
            self.next[index] = self.next.get(index, 0) + sum(len(t) for t in mapped["tokens"])
        return mapped


def chat_logprobs(completion_logprobs: Any, top: int) -> JSONObject | None:
    """The reverse: completions' four arrays as chat's token objects, each with the `top`
    likeliest alternatives (completions lists the sampled token too, even below them)."""
    if not isinstance(completion_logprobs, Mapping):
        return None
    tokens = completion_logprobs.get("tokens")
    if not isinstance(tokens, list):
        return None
    logprobs = completion_logprobs.get("token_logprobs") or []
    tops = completion_logprobs.get("top_logprobs") or []
    content = []
    for i, token in enumerate(tokens):
        token = token if isinstance(token, str) else ""
        alternatives = tops[i] if i < len(tops) and isinstance(tops[i], Mapping) else {}
        ranked = sorted(alternatives.items(), key=lambda item: -_number(item[1]))[:top]
        content.append(
            {
                **_token(token, logprobs[i] if i < len(logprobs) else None),
                "top_logprobs": [_token(t, lp) for t, lp in ranked],
            }
        )
    return {"content": content, "refusal": None}


def _token(token: str, logprob: Any) -> JSONObject:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode())}


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) else float("-inf")
