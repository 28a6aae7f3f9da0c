"""What affinity routing needs of one request, computed once when it is routed (and only
for `strategy: affinity`): its session, its prompt's chained block hashes, the anchor
every Turnout process hashes alike, and the `prompt_cache_key` to set, if any."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from policies.affinity.blocks import chained_hashes, prompt_text, stable_digest
from policies.affinity.session import SessionKey, session_key
from policies.affinity.settings import AffinitySettings

# How many leading blocks `prompt_cache_key` covers: enough to tell system prompts apart,
# few enough that a conversation keeps its key as it grows.
CACHE_KEY_BLOCKS = 4


@dataclass(frozen=True, slots=True)
class AffinityKey:
    settings: AffinitySettings
    session: SessionKey | None
    blocks: tuple[int, ...]  # chained hashes of the prompt's whole blocks
    anchor: bytes  # the first block's stable hash (else the session's): rendezvous key
    cache_key: str | None = None  # `prompt_cache_key` to set where the client set none
    cache_key_labels: frozenset[str] = frozenset()  # the deployments it is set for
    # The request itself, for the backends that count what their prefix cache holds of it
    # (policies/affinity/exact.py); a reference, never compared.
    body: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)


def affinity_key(
    settings: AffinitySettings,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    team: str | None,
    openai_labels: Collection[str] = (),
) -> AffinityKey:
    """`openai_labels`: the plan's deployments that take `prompt_cache_key`."""
    session = session_key(settings.session_from, body, headers, team)
    text = prompt_text(body)
    size = settings.block_chars
    if len(text) >= size:
        anchor = stable_digest(text[:size])
    else:
        anchor = stable_digest(session.digest if session is not None else text)
    cache_key = None
    if settings.set_prompt_cache_key and openai_labels and not body.get("prompt_cache_key"):
        head = text[: size * CACHE_KEY_BLOCKS]
        cache_key = "turnout-" + stable_digest(team or "", head).hex()
    return AffinityKey(
        settings,
        session,
        chained_hashes(text, size),
        anchor,
        cache_key,
        frozenset(openai_labels) if cache_key else frozenset(),
        body,
    )


def with_cache_key(body: dict[str, Any], key: AffinityKey | None, label: str) -> dict[str, Any]:
    """`body` with Turnout's `prompt_cache_key` where it is to be set for `label`: a hash of
    the team and the prompt's head, never its text nor the client's key."""
    if key is None or key.cache_key is None or label not in key.cache_key_labels:
        return body
    if body.get("prompt_cache_key"):
        return body
    return {**body, "prompt_cache_key": key.cache_key}
