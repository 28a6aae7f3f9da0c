"""Requests in flight at once, per key and per team (`limits: {concurrency: N}`).

A request takes one slot of each concurrency limit that applies to it from its headers,
before any byte of its body is read (`Limiter.admit_request`), and gives it back when it
ends, however it ends: answered, refused, failed, the client gone (499), a stream at its
last byte or cut (`Limiter.release`). The slots live in the shared store, so replicas
share one count; each is a lease (`DEFAULT_LEASE_S`, or what the gateway derives from its
deadlines), so the slots of a replica that died holding them come back on their own.
Over the limit: 429 `rate_limit_exceeded`, `Retry-After: 1`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from policies.errors import ApiError
from policies.policy_config import LimitSettings
from policies.state.base import Limit, LimitKind
from policies.teams import Caller

# Longer than any request can last, so a live request never loses its slot to its lease.
DEFAULT_LEASE_S = 900.0


@dataclass(slots=True)  # not frozen: released once, by whichever end comes first
class SlotLease:
    """The slots one request holds."""

    limits: tuple[Limit, ...]
    holder: str  # unique per request: the store's member for each slot
    released: bool = False

    @classmethod
    def new(cls, limits: tuple[Limit, ...]) -> SlotLease:
        return cls(limits, uuid.uuid4().hex)


def slot_limits(caller: Caller, lease_s: float) -> tuple[Limit, ...]:
    """The concurrency limits on `caller`: its key's (a team's `key_limits` are each of
    its keys'), then its team's."""
    scopes: list[tuple[str, LimitSettings | None]] = [(f"key:{caller.key_id}", caller.key_limits)]
    if caller.team_settings is not None:
        scopes.append((f"team:{caller.team}", caller.team_settings.limits))
    found = (scope_slot_limit(scope, settings, lease_s) for scope, settings in scopes)
    return tuple(limit for limit in found if limit is not None)


def scope_slot_limit(scope: str, settings: LimitSettings | None, lease_s: float) -> Limit | None:
    """The concurrency limit `settings` set on `scope` (`key:…`, `team:…`), if any."""
    if settings is None or settings.concurrency is None:
        return None
    return Limit(f"concurrency:{scope}", LimitKind.CONCURRENCY, settings.concurrency, lease_s)


def too_many_in_flight(refused: Limit, headers: dict[str, str]) -> ApiError:
    scope = refused.key.split(":")[1]
    return ApiError(
        f"Too many requests in flight for this {scope}: limit {refused.capacity} at once. "
        "Try again in 1s, or when one of your requests has ended.",
        status=429,
        type="requests",
        code="rate_limit_exceeded",
        headers={**headers, "retry-after": "1"},
    )
