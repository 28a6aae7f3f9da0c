"""Admission in two steps (policies/limits.py): the request counted from the headers, the
tokens once the body is parsed. A request is counted once, a refusal takes nothing, and
every error path gives the reservation back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from policies.errors import ApiError
from policies.limit_set import Reservation
from policies.limits import Limiter
from policies.policy_config import LimitSettings
from policies.state.memory import MemoryStore
from policies.teams import Caller

NOW = 1_000_000.0
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 60}


def caller(**limits: Any) -> Caller:
    return Caller("k", key_limits=LimitSettings.model_validate(limits))


def limiter() -> tuple[Limiter, MemoryStore]:
    store = MemoryStore(clock=lambda: NOW)
    return Limiter(store, lambda: NOW), store


def remaining(store: MemoryStore, reservation: Reservation) -> dict[str, int]:
    states = asyncio.run(store.peek(reservation.limits, NOW))
    return {s.limit.key.split(":")[0]: s.remaining for s in states}


def refusals() -> tuple[list[tuple[str, str]], Any]:
    seen: list[tuple[str, str]] = []
    return seen, lambda scope, kind: seen.append((scope, kind))


def test_the_request_is_counted_once_across_both_steps() -> None:
    limits, store = limiter()
    who = caller(rpm=5, tpm=1000)
    _, on_refused = refusals()

    async def admit() -> Reservation:
        head = await limits.admit_request(who, on_refused)
        reservation = await limits.admit_tokens(head, BODY, on_refused)
        assert reservation is not None
        return reservation

    reservation = asyncio.run(admit())
    assert remaining(store, reservation) == {"rpm": 4, "tpm": 1000 - 63}


def test_a_key_over_its_rpm_is_refused_from_the_headers_alone() -> None:
    limits, _ = limiter()
    who = caller(rpm=1)
    seen, on_refused = refusals()
    asyncio.run(limits.admit_request(who, on_refused))
    with pytest.raises(ApiError) as refused:
        asyncio.run(limits.admit_request(who, on_refused))
    assert refused.value.status == 429
    assert seen == [("key", "rpm")]


def test_an_overdrawn_token_limit_is_refused_from_the_headers_alone() -> None:
    limits, _ = limiter()
    who = caller(tpm=100)
    _, on_refused = refusals()
    head = asyncio.run(limits.admit_request(who, on_refused))
    asyncio.run(limits.settle(head, 150))  # the answer used more than the minute allows
    with pytest.raises(ApiError) as refused:
        asyncio.run(limits.admit_request(who, on_refused))
    assert refused.value.type == "tokens"


def test_a_token_refusal_gives_the_request_back() -> None:
    limits, store = limiter()
    who = caller(rpm=5, tpm=10)  # the body's 63 tokens never fit
    seen, on_refused = refusals()
    head = asyncio.run(limits.admit_request(who, on_refused))
    assert head is not None
    with pytest.raises(ApiError):
        asyncio.run(limits.admit_tokens(head, BODY, on_refused))
    asyncio.run(limits.settle(head, 0))  # what every error path after the headers does
    assert remaining(store, head) == {"rpm": 5, "tpm": 10}
    assert seen == [("key", "tpm")]


def test_an_error_before_the_tokens_keeps_the_request_and_leaks_no_tokens() -> None:
    limits, store = limiter()
    who = caller(rpm=5, tpm=1000)
    _, on_refused = refusals()
    head = asyncio.run(limits.admit_request(who, on_refused))
    assert head is not None
    asyncio.run(limits.settle(head, 0))  # e.g. the body timed out, or was not JSON
    assert remaining(store, head) == {"rpm": 4, "tpm": 1000}
