"""Logprobs for the fake upstream, in the shapes vLLM's OpenAI server answers.

Tokens are the fake's word pieces (``"echo:"``, ``" hello"``, ...). Values are made up but
deterministic and consistent with the ranks they are listed with: at even positions the
actual token is the likeliest (rank 1), at odd positions it ranks just below the ``k``
alternatives listed.

- completions ``logprobs: k``: per choice ``{tokens, token_logprobs, top_logprobs,
  text_offset}``, each ``top_logprobs`` entry the sampled token plus the top ``k``
  (offsets count from the start of the returned text).
- ``prompt_logprobs: k`` (vLLM's extension; refused with ``stream: true``): a list with
  one entry per prompt token, ``None`` for the first, then ``{token_id: {"logprob",
  "rank", "decoded_token"}}`` with the prompt's own token first and the top ``k`` after it
  in rank order (vLLM builds the dict by inserting the actual token first; a duplicate
  keeps that place). On completions it rides on each choice; on chat it is top level.
"""

from __future__ import annotations

import hashlib
from typing import Any

Json = dict[str, Any]


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def token_id(token: str) -> int:
    return _digest(token) % 49_000


def logprob_of(token: str, position: int) -> float:
    return -round(0.05 + (_digest(f"{position}:{token}") % 300) / 100, 2)


def ranked(token: str, position: int, k: int) -> list[tuple[int, str, float, int]]:
    """(id, decoded, logprob, rank): the actual token first, then the top k by rank."""
    actual = logprob_of(token, position)
    likeliest = position % 2 == 0
    rank = 1 if likeliest else k + 1
    top: list[tuple[int, str, float, int]] = []
    for r in range(1, k + 1):
        if likeliest and r == 1:
            top.append((token_id(token), token, actual, 1))
            continue
        step = (r - 1) if likeliest else (r - k - 1)
        top.append((token_id(token) + 1000 * r, f" alt{r}", round(actual - 0.5 * step, 2), r))
    return [(token_id(token), token, actual, rank), *top]


def completion_logprobs(pieces: list[str], k: int, start: int = 0) -> Json:
    """Completions logprobs for generated ``pieces``, positions counted from ``start``."""
    tokens, values, tops, offsets = [], [], [], []
    offset = 0
    for i, piece in enumerate(pieces):
        entries = ranked(piece, start + i, k)
        tokens.append(piece)
        values.append(entries[0][2])
        top: dict[str, float] = {}
        for _, decoded, value, _ in entries:
            top.setdefault(decoded, value)
        tops.append(top)
        offsets.append(offset)
        offset += len(piece)
    return {
        "tokens": tokens,
        "token_logprobs": values,
        "top_logprobs": tops,
        "text_offset": offsets,
    }


def prompt_logprobs(pieces: list[str], k: int) -> list[Json | None]:
    """vLLM's ``prompt_logprobs`` for a prompt of ``pieces``."""
    result: list[Json | None] = [None]
    for i, piece in enumerate(pieces[1:], start=1):
        entry: Json = {}
        for ident, decoded, value, rank in ranked(piece, i, k):
            entry.setdefault(str(ident), {"logprob": value, "rank": rank, "decoded_token": decoded})
        result.append(entry)
    return result
