"""One request's use of the response cache (policies/cache.py), as the pipeline sees it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from policies.cache import CacheChoice, ResponseCache
from providers.types import Endpoint, JSONObject
from router.accounting import (
    ANSWERED_BY_MODEL,
    CACHE,
    CLAMPED,
    DEPLOYMENT,
    DROPPED,
    EMULATED,
    RequestRecord,
)
from router.gateway import Gateway, PolicyObserver

# The headers a cached answer replays: who answered it, and what was done to the request.
_REPLAYED = (DEPLOYMENT, ANSWERED_BY_MODEL, EMULATED, DROPPED, CLAMPED)


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    """The key is the normalized body and everything routing decided for it (model,
    deployments, translation mode), scoped to the team (a teamless key: to that key); an
    entry keeps the translation headers, so a hit says what the original answer did."""

    cache: ResponseCache
    choice: CacheChoice

    @classmethod
    def choose(
        cls,
        gateway: Gateway,
        record: RequestRecord,
        endpoint: Endpoint,
        forward: dict[str, Any],
        options: Any,
    ) -> CachedAnswer | None:
        cache, route, caller = gateway.cache, record.route, record.caller
        if cache is None or route is None or caller is None:
            return None
        plan = route.plan
        decided = "|".join(
            [endpoint.value, plan.model, plan.mode.value, *(t.label for t in plan.targets)]
        )
        scope = caller.team if caller.team is not None else f"key:{caller.key_id}"
        return cls(cache, cache.choose(scope, decided, forward, options))

    async def lookup(self, record: RequestRecord, observer: PolicyObserver) -> bytes | None:
        entry = await self.cache.get(self.choice)
        observer.cache("miss" if entry is None else "hit")
        record.extra_headers[CACHE] = "miss" if entry is None else "hit"
        if entry is None:
            return None
        stored = orjson.loads(entry)
        record.extra_headers.update(stored["headers"])
        return orjson.dumps(stored["body"])

    async def store(self, result: JSONObject, record: RequestRecord) -> None:
        headers = {k: v for k, v in record.headers().items() if k in _REPLAYED}
        await self.cache.put(self.choice, orjson.dumps({"headers": headers, "body": result}))
