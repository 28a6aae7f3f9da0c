"""A request held to a share of its limits (policies/limits.py, `share=`; a batch line):
refused where a live request of the same cost is admitted, for rpm, tpm, budgets and
concurrency slots, with a Retry-After of when its share would let it in; too large for
its share, refused for good. Against both stores (Redis: a real server)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from policies.errors import ApiError
from policies.limit_set import Reservation, headroom
from policies.limits import Limiter
from policies.policy_config import LimitSettings
from policies.state.base import Limit, LimitKind, StateStore
from policies.state.memory import MemoryStore
from policies.state.redis_store import RedisStore
from policies.teams import Caller
from tests.redis_server import redis_url as redis_url

NOW = 1_700_000_000.25
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 60}
TOKENS = 63  # BODY's estimate


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[Limiter]:
    store: StateStore
    if request.param == "memory":
        store = MemoryStore(clock=lambda: NOW)
    else:
        url: str = request.getfixturevalue("redis_url")
        store = RedisStore.from_url(url, prefix=f"test:{uuid.uuid4().hex}:")
    yield Limiter(store, lambda: NOW)
    await store.aclose()


def caller(**limits: Any) -> Caller:
    return Caller("k", key_limits=LimitSettings.model_validate(limits))


def ignore(scope: str, kind: str) -> None:
    return None


async def batch_line(limits: Limiter, who: Caller, share: float = 0.5) -> Reservation | None:
    return await limits.admit(who, BODY, ignore, share=share)


async def test_rpm_leaves_the_rest_to_live_requests(limiter: Limiter) -> None:
    who = caller(rpm=4)  # a token every 15 s; a half share: 2 must stay
    assert await batch_line(limiter, who) is not None
    assert await batch_line(limiter, who) is not None

    with pytest.raises(ApiError) as refused:
        await batch_line(limiter, who)

    assert refused.value.status == 429
    assert refused.value.code == "rate_limit_exceeded"
    assert refused.value.headers["retry-after"] == "15"  # one more token, then it fits
    assert await limiter.admit(who, BODY, ignore) is not None  # live: the same cost fits


async def test_tpm_leaves_the_rest_to_live_requests(limiter: Limiter) -> None:
    who = caller(tpm=200)  # 10 s for 33 tokens; 100 must stay
    assert await batch_line(limiter, who) is not None  # 137 left

    with pytest.raises(ApiError) as refused:
        await batch_line(limiter, who)  # would leave 74

    assert refused.value.type == "tokens"
    # 163 needed, 137 there: 26 tokens at 200 a minute.
    assert refused.value.headers["retry-after"] == "8"
    reservation = await limiter.admit(who, BODY, ignore)
    assert reservation is not None
    assert reservation.states[0].remaining == 200 - 2 * TOKENS


async def test_budget_leaves_the_rest_to_live_requests(limiter: Limiter) -> None:
    who = caller(budget_tokens={"per": "hour", "tokens": 200})
    assert await batch_line(limiter, who) is not None

    with pytest.raises(ApiError) as refused:
        await batch_line(limiter, who)

    # NOW is 13 min 20.25 s into its hour: the budget is back at the hour's end.
    assert refused.value.headers["retry-after"] == str(46 * 60 + 40)
    assert await limiter.admit(who, BODY, ignore) is not None


async def test_slots_leave_the_rest_to_live_requests(limiter: Limiter) -> None:
    who = caller(concurrency=4)  # a half share: 2 slots at most
    held = [await batch_line(limiter, who), await batch_line(limiter, who)]

    with pytest.raises(ApiError) as refused:
        await batch_line(limiter, who)

    assert refused.value.headers["retry-after"] == "1"
    live = await limiter.admit(who, BODY, ignore)
    assert live is not None
    await limiter.release(held[0])
    with pytest.raises(ApiError):  # 2 held (a batch line's, the live one's): none to spare
        await batch_line(limiter, who)
    await limiter.release(live)
    assert await batch_line(limiter, who) is not None


async def test_a_small_share_still_gets_one(limiter: Limiter) -> None:
    who = caller(rpm=3, concurrency=3)
    assert await batch_line(limiter, who, share=0.01) is not None
    with pytest.raises(ApiError):
        await batch_line(limiter, who, share=0.01)


async def test_a_request_larger_than_its_share_is_too_large(limiter: Limiter) -> None:
    who = caller(tpm=100)  # half: 50 tokens, under the body's 63

    with pytest.raises(ApiError) as refused:
        await batch_line(limiter, who)

    assert "retry-after" not in refused.value.headers  # no wait would let it in
    assert "share of 100" in str(refused.value)
    assert await limiter.admit(who, BODY, ignore) is not None


async def test_cover_holds_the_request_to_its_share(limiter: Limiter) -> None:
    who = caller(tpm=300)  # half: 150
    reservation = await batch_line(limiter, who)
    assert reservation is not None
    assert reservation.share == 0.5

    await limiter.cover(reservation, 2 * TOKENS, ignore)  # 126: within the share
    with pytest.raises(ApiError) as refused:
        await limiter.cover(reservation, 3 * TOKENS, ignore)

    assert "retry-after" not in refused.value.headers
    assert reservation.reserved_tokens == 2 * TOKENS


def test_headroom_is_the_rest_of_each_limit() -> None:
    def limit(capacity: int) -> Limit:
        return Limit("rpm:key:k", LimitKind.RATE, capacity, 60.0)

    assert headroom([limit(10)], 1.0) is None  # live requests: the store's old path
    assert headroom([limit(10), limit(100)], 0.7) == [3, 30]
    assert headroom([limit(100)], 0.29) == [71]
    assert headroom([limit(3)], 0.01) == [2]  # at least one
    for bad in (0.0, -1.0, 1.5, float("nan")):
        with pytest.raises(ValueError, match="share"):
            headroom([limit(10)], bad)
