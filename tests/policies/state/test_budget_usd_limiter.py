"""The Limiter's dollar budgets over every store (memory, Redis, Redis Cluster, where the
key's, the team's and the model's budgets sit in different slots): reserved on the
estimate, topped up by `cover` (all or nothing), settled on the real cost, a partly
unknown cost never settling below the estimate, a refusal taking nothing."""

from __future__ import annotations

from typing import Any

import pytest

from policies.errors import ApiError
from policies.limit_set import Reservation, Unit
from policies.limits import Limiter
from policies.policy_config import LimitSettings, ModelLimitSettings, TeamSettings
from policies.pricing.cost import RequestCost
from policies.state.base import StateStore
from policies.state.redis_keys import StateKeys
from policies.teams import Caller

NOW = 1_700_000_000.25  # 22:13:20 UTC: 6,400 s before midnight
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 60}
MODEL = ("m", ModelLimitSettings.model_validate({"budget_usd": {"per": "day", "usd": 5e-6}}))


def budget(nanos: int, per: str = "day", **more: Any) -> LimitSettings:
    return LimitSettings.model_validate({"budget_usd": {"per": per, "usd": nanos / 1e9}, **more})


def caller(key: LimitSettings | None, team: LimitSettings | None = None) -> Caller:
    settings = TeamSettings(limits=team) if team is not None else None
    return Caller("k", team="t" if settings else None, team_settings=settings, key_limits=key)


def ignore(scope: str, kind: str) -> None:
    return None


async def left(store: StateStore, reservation: Reservation) -> list[int]:
    """What is left of each dollar budget the reservation holds."""
    dollars = [reservation.limits[i] for i in reservation.counting(Unit.NANOS)]
    return [state.remaining for state in await store.peek(dollars, NOW)]


async def test_key_team_and_model_budgets_are_reserved_topped_up_and_settled(
    store: StateStore,
) -> None:
    limiter = Limiter(store, lambda: NOW)
    who = caller(budget(10_000), budget(20_000, per="month"))
    held = await limiter.admit(who, BODY, ignore, model=MODEL, nanos=lambda: 1_000)
    assert held is not None
    assert held.reserved_nanos == 1_000
    assert await left(store, held) == [9_000, 19_000, 4_000]

    await limiter.cover(held, held.reserved_tokens, ignore, lambda: 3_000)  # a hedge beside it
    assert held.reserved_nanos == 3_000
    assert await left(store, held) == [7_000, 17_000, 2_000]

    await limiter.settle(held, 10, cost=RequestCost(usd=2.5e-6, calls=2))
    assert await left(store, held) == [7_500, 17_500, 2_500]


async def test_a_cover_the_budget_cannot_hold_is_refused_with_nothing_taken(
    store: StateStore,
) -> None:
    limiter = Limiter(store, lambda: NOW)
    who = caller(budget(10_000))
    held = await limiter.admit(who, BODY, ignore, nanos=lambda: 4_000)
    beside = await limiter.admit(who, BODY, ignore, nanos=lambda: 3_000)
    assert held is not None
    assert beside is not None
    with pytest.raises(ApiError) as refused:
        await limiter.cover(held, held.reserved_tokens, ignore, lambda: 8_000)
    assert refused.value.code == "budget_exceeded"
    assert refused.value.headers["retry-after"] == str(6_400)  # midnight UTC
    assert held.reserved_nanos == 4_000
    assert await left(store, held) == [3_000]
    await limiter.cover(held, held.reserved_tokens, ignore, lambda: 7_000)  # what fits
    assert await left(store, held) == [0]


@pytest.mark.parametrize(("known", "settled"), [(1_000, 4_000), (7_000, 7_000)])
async def test_a_partly_unknown_cost_settles_on_no_less_than_the_estimate(
    store: StateStore, known: int, settled: int
) -> None:
    limiter = Limiter(store, lambda: NOW)
    held = await limiter.admit(caller(budget(10_000)), BODY, ignore, nanos=lambda: 4_000)
    assert held is not None
    cost = RequestCost(usd=known / 1e9, unpriced=("a/unpriced",), calls=2)
    await limiter.settle(held, None, cost=cost)
    assert await left(store, held) == [10_000 - settled]


async def test_a_refused_estimate_gives_the_request_back(store: StateStore) -> None:
    limiter = Limiter(store, lambda: NOW)
    who = caller(budget(3_000, rpm=5))
    with pytest.raises(ApiError) as refused:
        await limiter.admit(who, BODY, ignore, nanos=lambda: 4_000)
    assert refused.value.status == 429
    assert refused.value.message.startswith("Request too large for the dollar budget")
    assert "retry-after" not in refused.value.headers
    held = await limiter.admit(who, BODY, ignore, nanos=lambda: 3_000)
    assert held is not None
    assert held.states[0].remaining == 4  # rpm: only this request counted
    assert await left(store, held) == [0]


async def test_no_dollar_budget_asks_for_no_estimate(store: StateStore) -> None:
    def unasked() -> int:
        raise AssertionError("priced without a dollar budget")

    limiter = Limiter(store, lambda: NOW)
    held = await limiter.admit(caller(LimitSettings(tpm=1000)), BODY, ignore, nanos=unasked)
    assert held is not None
    assert held.reserved_nanos == 0


def test_a_dollar_budget_shares_its_owners_hash_tag() -> None:
    limiter = Limiter(store=None, clock=lambda: NOW)  # type: ignore[arg-type]
    pairs = limiter.limits_for(caller(budget(1, tpm=5), budget(1)), NOW)
    keys = [StateKeys("t:").limit(limit) for limit, _ in pairs]
    assert keys[0].startswith("t:{key:k}:rate:tpm:key:k")
    assert keys[1].startswith("t:{key:k}:budget:budget_usd:key:k:day:")
    assert keys[2].startswith("t:{team:t}:budget:budget_usd:team:t:day:")
    assert [unit for _, unit in pairs] == [Unit.TOKENS, Unit.NANOS, Unit.NANOS]


async def test_a_share_holds_for_a_models_budget_too(store: StateStore) -> None:
    """A batch line (half a share) from a caller with no limits of its own: the model's
    budget, known only once routed, still leaves half to live requests."""
    limiter = Limiter(store, lambda: NOW)
    who = caller(None)
    head = await limiter.admit_request(who, ignore, share=0.5)
    with pytest.raises(ApiError) as refused:
        await limiter.admit_tokens(head, BODY, ignore, model=MODEL, nanos=lambda: 3_000)
    assert "this request's share: $0.0000025" in refused.value.message
    live = await limiter.admit(who, BODY, ignore, model=MODEL, nanos=lambda: 3_000)
    assert live is not None
    assert await left(store, live) == [2_000]
