"""The status page's limits: every team's, key's and model's, with what is used of each,
read from the shared store without charging anything (`StateStore.peek`, as explain reads
them; `StateStore.slots_held` for concurrency). Keys by configured name or id, never the
key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog

from policies.concurrency import DEFAULT_LEASE_S, scope_slot_limit
from policies.config import KeySettings, TurnoutConfig
from policies.limit_set import Unit, budget_limits, scope_limits
from policies.policy_config import NANOS_PER_USD, LimitSettings
from policies.state.base import Limit, LimitKind, LimitState, StateUnavailable
from policies.teams import key_id
from router.gateway import Gateway

log = structlog.get_logger("turnout.status")

_KINDS = {"rpm": "rpm", "tpm": "tpm", "budget": "budget_tokens", "budget_usd": "budget_usd"}


async def limits_sections(
    gateway: Gateway, now: float, *, reachable: bool
) -> dict[str, list[dict[str, Any]]]:
    config = gateway.config
    lease_s = DEFAULT_LEASE_S  # a slot limit's key is all `slots_held` reads; not its lease
    scopes: list[tuple[str, LimitSettings | None]] = []
    for name, team in config.teams.items():
        scopes.append((f"team:{name}", team.limits))
        scopes.extend((f"key:{key_id(k)}", team.key_limits) for k in team.keys)
    scopes.extend((f"key:{key_id(k.key)}", k.limits) for k in config.keys)
    limits = {scope: scope_limit_list(scope, settings, now, lease_s) for scope, settings in scopes}
    wanted = [lim for group in limits.values() for lim, _ in group]
    read = await read_limits(wanted, gateway, now) if reachable else {}

    def shown(scope: str) -> list[dict[str, Any]]:
        return [limit_json(lim, read.get(lim.key), now) for lim, _ in limits[scope]]

    teams = []
    for name, team in config.teams.items():
        keys = [_key_json(k, None, shown(f"key:{key_id(k)}")) for k in team.keys]
        teams.append(
            {
                "name": name,
                "models": list(team.models) if team.models is not None else None,
                "limits": shown(f"team:{name}"),
                "keys": keys,
            }
        )
    keys = [_key_json(k.key, k, shown(f"key:{key_id(k.key)}")) for k in config.keys]
    return {"teams": teams, "keys": keys}


def _key_json(key: str, entry: KeySettings | None, limits: list[dict[str, Any]]) -> dict[str, Any]:
    ident = key_id(key)
    name = entry.name if entry is not None else None
    return {
        "name": name or ident,
        "key_id": ident,
        "admin": bool(entry.admin) if entry is not None else False,
        "limits": limits,
    }


def scope_limit_list(
    scope: str, settings: LimitSettings | None, now: float, lease_s: float
) -> list[tuple[Limit, Unit]]:
    """The limits `settings` define for `scope`, concurrency included (the limiter takes
    those from the headers: policies/concurrency.py, with the same key)."""
    if settings is None:
        return []
    found = scope_limits(scope, settings, now)
    slot = scope_slot_limit(scope, settings, lease_s)
    if slot is not None:
        found.append((slot, Unit.REQUESTS))
    return found


async def read_limits(
    limits: Sequence[Limit], gateway: Gateway, now: float
) -> dict[str, LimitState | int]:
    """Each limit's state as the store has it, charging nothing: `peek` for buckets and
    budgets, `slots_held` for concurrency. An unreachable store: absent (shown unknown)."""
    counted = [lim for lim in limits if lim.kind is not LimitKind.CONCURRENCY]
    slots = [lim for lim in limits if lim.kind is LimitKind.CONCURRENCY]
    found: dict[str, LimitState | int] = {}
    try:
        if counted:
            states = await gateway.store.peek(counted, now)
            found.update((lim.key, state) for lim, state in zip(counted, states, strict=True))
        if slots:
            held = await gateway.store.slots_held(slots, now)
            found.update((lim.key, n) for lim, n in zip(slots, held, strict=True))
    except StateUnavailable as exc:
        log.warning("status_state_unavailable", error=gateway.redactor.for_log(str(exc)))
    return found


def limit_json(limit: Limit, state: LimitState | int | None, now: float) -> dict[str, Any]:
    """One limit: `capacity`, `used`, `remaining` (dollars for `budget_usd`, else requests
    or tokens), and when it is whole again (`reset_s`, `resets_at`; a budget: its period's
    end; concurrency: none, a slot comes back when its request ends)."""
    if limit.kind is LimitKind.CONCURRENCY:
        kind = "concurrency"
    else:
        kind = _KINDS[limit.key.split(":", 1)[0]]

    def scaled(amount: int) -> float | int:  # dollars for a dollar budget, else as counted
        return amount / NANOS_PER_USD if kind == "budget_usd" else amount

    entry: dict[str, Any] = {
        "kind": kind,
        "capacity": scaled(limit.capacity),
        "per": limit.key.rsplit(":", 1)[1] if limit.kind is LimitKind.BUDGET else None,
    }
    if state is None:
        return entry | {"used": None, "remaining": None, "reset_s": None, "resets_at": None}
    if isinstance(state, int):  # slots held
        return entry | {
            "used": state,
            "remaining": max(0, limit.capacity - state),
            "reset_s": None,
            "resets_at": None,
        }
    used = limit.capacity - state.remaining
    return entry | {
        "used": scaled(used),
        "remaining": scaled(max(0, state.remaining)),
        "reset_s": round(state.reset_s, 3),
        "resets_at": round(now + state.reset_s, 3),
    }


async def model_limits(
    gateway: Gateway, now: float, reachable: bool
) -> dict[str, list[dict[str, Any]]]:
    """A model's own budgets (`models.<m>.limits`), over every caller's requests to it."""
    config: TurnoutConfig = gateway.config
    per_model = {
        name: budget_limits(f"model:{name}", route.limits, now)
        for name, route in config.models.items()
        if route.limits is not None
    }
    wanted = [lim for group in per_model.values() for lim, _ in group]
    read = await read_limits(wanted, gateway, now) if reachable else {}
    return {
        name: [limit_json(lim, read.get(lim.key), now) for lim, _ in group]
        for name, group in per_model.items()
    }


# --- the state store and batches -----------------------------------------------------------
