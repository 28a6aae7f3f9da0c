"""The exact-match response cache: whole (non-streaming) responses, keyed on the
normalized request and the caller's team.

Normalized: the body Turnout would forward, keys sorted, without the fields that cannot
change the answer (`stream`, `stream_options`) or that are Turnout's own. Streams are
never served from or stored in the cache. Teams (and keys outside teams) never share
entries unless the config says `cache: {share_across_teams: true}`."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from policies.policy_config import CacheSettings
from policies.state.base import StateStore

IGNORED = frozenset({"stream", "stream_options"})


@dataclass(frozen=True, slots=True)
class CacheChoice:
    key: str
    ttl_s: float
    read: bool
    write: bool


class ResponseCache:
    def __init__(self, store: StateStore, settings: CacheSettings) -> None:
        self._store = store
        self._settings = settings

    def choose(
        self,
        scope: str,
        decided: str,
        body: Mapping[str, Any],
        options: Mapping[str, Any] | None,
    ) -> CacheChoice:
        """What to do for one request: its key, TTL, and whether to read and to write.
        `scope`: whose entries these are (a team, or a key outside teams); `decided`: what
        routing decided (endpoint, model, deployments, translation mode), so a request
        routed or translated differently never gets another's answer."""
        options = options or {}
        shared = "*" if self._settings.share_across_teams else scope
        normalized = {k: v for k, v in body.items() if k not in IGNORED}
        digest = hashlib.sha256(
            orjson.dumps([shared, decided, normalized], option=orjson.OPT_SORT_KEYS)
        ).hexdigest()
        ttl = min(float(options.get("ttl") or self._settings.ttl), self._settings.longest_ttl)
        return CacheChoice(
            key=f"cache:{digest}",
            ttl_s=ttl,
            read=not options.get("no_cache", False),
            write=not options.get("no_store", False),
        )

    async def get(self, choice: CacheChoice) -> bytes | None:
        return await self._store.cache_get(choice.key) if choice.read else None

    async def put(self, choice: CacheChoice, response: bytes) -> None:
        if choice.write:
            await self._store.cache_set(choice.key, response, choice.ttl_s)
