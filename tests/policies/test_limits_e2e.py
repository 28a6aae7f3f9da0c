"""Requests per minute, tokens per minute and token budgets, per key and per team, end to
end: the official openai SDK against a real Turnout whose limits read an injected clock."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest

from policies.token_estimate import estimate_tokens
from tests.fakes.openai_upstream import FakeOpenAIUpstream, Ok
from tests.manual_clock import ManualClock
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
MESSAGES: list[Any] = [{"role": "user", "content": "hi there"}]
DURATION = re.compile(r"^(\d+h)?(\d+m)?\d+(s|ms)$")


def limited(upstream: FakeOpenAIUpstream, **overrides: Any) -> dict[str, Any]:
    return simple_config({"up": upstream.base_url}, **overrides)


def ask(server: RunningTurnout, key: str, **kwargs: Any) -> Any:
    with server.client(key) as client:
        return client.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, **kwargs
        )


def refused(server: RunningTurnout, key: str, **kwargs: Any) -> openai.RateLimitError:
    with pytest.raises(openai.RateLimitError) as caught:
        ask(server, key, **kwargs)
    error = caught.value
    assert error.code == "rate_limit_exceeded"
    return error


def chat_calls(upstream: FakeOpenAIUpstream) -> int:
    return sum(r.path == "/v1/chat/completions" for r in upstream.requests)


def message_of(error: openai.APIStatusError) -> str:
    assert isinstance(error.body, dict)
    return str(error.body["message"])


def test_rpm_per_key_refuses_with_openai_headers_and_refills(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    clock = ManualClock()
    limits = {"rpm": 2, "tpm": 1000}
    server = turnout(limited(upstream, keys=[{"key": "sk-a", "limits": limits}]), clock)

    first = ask(server, "sk-a", max_tokens=10)
    estimate = estimate_tokens({"model": "m", "messages": MESSAGES, "max_tokens": 10})
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"] == "30s"  # one request back at 2/min
    assert first.headers["x-ratelimit-limit-tokens"] == "1000"
    assert first.headers["x-ratelimit-remaining-tokens"] == str(1000 - estimate)
    assert DURATION.match(first.headers["x-ratelimit-reset-tokens"])
    used = first.parse().usage.total_tokens

    second = ask(server, "sk-a", max_tokens=10)
    assert second.headers["x-ratelimit-remaining-requests"] == "0"
    assert second.headers["x-ratelimit-reset-requests"] == "1m0s"

    error = refused(server, "sk-a", max_tokens=10)
    assert error.status_code == 429
    assert error.type == "requests"
    assert error.response.headers["retry-after"] == "30"
    assert error.response.headers["x-ratelimit-limit-requests"] == "2"
    assert error.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert error.response.headers["x-ratelimit-reset-requests"] == "1m0s"
    # Both answers were settled to their true usage; the refusal took nothing.
    assert error.response.headers["x-ratelimit-remaining-tokens"] == str(1000 - 2 * used)
    assert "requests per minute" in message_of(error)
    assert chat_calls(upstream) == 2  # a refused request never reaches a backend

    clock.advance(30)
    assert ask(server, "sk-a").headers["x-ratelimit-remaining-requests"] == "0"
    assert chat_calls(upstream) == 3


def test_two_keys_of_a_team_share_the_team_limit(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    teams = {
        "research": {"keys": ["sk-r1", "sk-r2"], "limits": {"rpm": 3}},
        "ops": {"keys": ["sk-o1"], "limits": {"rpm": 3}},
    }
    server = turnout(limited(upstream, teams=teams), ManualClock())

    for key in ("sk-r1", "sk-r2", "sk-r1"):
        assert ask(server, key).headers["x-ratelimit-limit-requests"] == "3"
    error = refused(server, "sk-r2")
    assert "on this team" in message_of(error)
    refused(server, "sk-r1")
    # Another team's allowance is its own.
    assert ask(server, "sk-o1").headers["x-ratelimit-remaining-requests"] == "2"
    assert chat_calls(upstream) == 4


def test_key_limit_and_team_limit_each_apply_and_a_refusal_takes_from_neither(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    teams = {
        "research": {
            "keys": ["sk-r1", "sk-r2"],
            "limits": {"rpm": 3},  # the whole team
            "key_limits": {"rpm": 2},  # each of its keys
        }
    }
    keys = [{"key": "sk-solo", "limits": {"rpm": 1}}, {"key": "sk-free"}]
    server = turnout(limited(upstream, teams=teams, keys=keys), ManualClock())

    ask(server, "sk-r1")
    ask(server, "sk-r1")
    assert "on this key" in message_of(refused(server, "sk-r1"))
    # The key's refusal took nothing from the team: one request of its 3 is left.
    assert ask(server, "sk-r2").headers["x-ratelimit-remaining-requests"] == "0"
    assert "on this team" in message_of(refused(server, "sk-r2"))

    ask(server, "sk-solo")
    refused(server, "sk-solo")
    # A key with no limits of its own, in no team, has none.
    assert "x-ratelimit-limit-requests" not in ask(server, "sk-free").headers
    assert chat_calls(upstream) == 5


async def test_100_concurrent_requests_against_rpm_10_admit_exactly_10(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    upstream.set_default(Ok(delay=0.05))  # admitted requests overlap the refused ones
    config = limited(upstream, keys=[{"key": "sk-a", "limits": {"rpm": 10}}])
    server = await asyncio.to_thread(turnout, config, ManualClock())

    async with server.async_client("sk-a", max_retries=0) as client:
        outcomes = await asyncio.gather(
            *(
                client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=5)
                for _ in range(100)
            ),
            return_exceptions=True,
        )
    refusals = [o for o in outcomes if isinstance(o, openai.RateLimitError)]
    assert len(refusals) == 90
    assert len([o for o in outcomes if not isinstance(o, BaseException)]) == 10
    assert chat_calls(upstream) == 10


def test_tpm_reserves_an_estimate_then_settles_to_the_actual_usage(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    server = turnout(
        limited(upstream, keys=[{"key": "sk-a", "limits": {"tpm": 100}}]), ManualClock()
    )
    estimate = estimate_tokens({"model": "m", "messages": MESSAGES, "max_tokens": 60})
    assert estimate == 63  # "user" + "hi there": 12 characters, 3 tokens; 60 to complete

    first = ask(server, "sk-a", max_tokens=60)
    assert first.headers["x-ratelimit-remaining-tokens"] == str(100 - estimate)
    used = first.parse().usage.total_tokens
    assert used < estimate
    # Uncorrected, the second estimate would not fit in what the first reserved.
    second = ask(server, "sk-a", max_tokens=60)
    assert second.headers["x-ratelimit-remaining-tokens"] == str(100 - used - estimate)

    wanted = estimate_tokens({"messages": MESSAGES, "max_tokens": 95})
    assert 100 - 2 * used < wanted <= 100
    error = refused(server, "sk-a", max_tokens=95)  # within the limit, not what is left
    assert error.type == "tokens"
    assert "tokens per minute" in message_of(error)
    # Until the bucket holds it: what is missing, back at 100 tokens a minute.
    missing = wanted - (100 - 2 * used)
    assert error.response.headers["retry-after"] == str(math.ceil(missing * 60 / 100))
    # More than a minute's allowance can never be admitted: no Retry-After, and says so.
    too_large = refused(server, "sk-a", max_tokens=500)
    assert "Request too large for tokens per minute" in message_of(too_large)
    assert "retry-after" not in too_large.response.headers
    assert chat_calls(upstream) == 2


def test_a_daily_budget_refuses_once_used_up_and_resets_the_next_day(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    clock = ManualClock()  # noon UTC
    upstream.set_default(Ok(text=" ".join(["word"] * 40)))
    budget = {"budget_tokens": {"per": "day", "tokens": 100}}
    server = turnout(limited(upstream, keys=[{"key": "sk-a", "limits": budget}]), clock)

    estimate = estimate_tokens({"model": "m", "messages": MESSAGES, "max_tokens": 20})
    first = ask(server, "sk-a", max_tokens=20)
    used = first.parse().usage.total_tokens
    assert used == 42  # more than the estimate: the budget is charged what was used
    second = ask(server, "sk-a", max_tokens=20)
    assert second.headers["x-ratelimit-limit-tokens"] == "100"
    assert second.headers["x-ratelimit-remaining-tokens"] == str(100 - used - estimate)

    error = refused(server, "sk-a", max_tokens=20)  # 16 left, 23 estimated
    assert error.type == "tokens"
    assert "Token budget of 100" in message_of(error)
    assert error.response.headers["retry-after"] == str(12 * 3600)  # until midnight UTC
    assert error.response.headers["x-ratelimit-reset-tokens"] == "12h0m0s"
    clock.advance(12 * 3600 - 1)
    refused(server, "sk-a", max_tokens=20)

    clock.advance(2)  # a new day
    again = ask(server, "sk-a", max_tokens=20)
    assert again.headers["x-ratelimit-remaining-tokens"] == str(100 - estimate)
    assert chat_calls(upstream) == 3


def test_a_stream_is_settled_to_the_usage_it_reported(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    server = turnout(
        limited(upstream, keys=[{"key": "sk-a", "limits": {"tpm": 100}}]), ManualClock()
    )
    estimate = estimate_tokens({"model": "m", "messages": MESSAGES, "max_tokens": 60})
    with server.client("sk-a") as client:
        raw = client.chat.completions.with_raw_response.create(
            model="m",
            messages=MESSAGES,
            max_tokens=60,
            stream=True,
            stream_options={"include_usage": True},
        )
        assert raw.headers["x-ratelimit-remaining-tokens"] == str(100 - estimate)
        usage = [c.usage for c in raw.parse() if c.usage is not None]
    assert len(usage) == 1
    # Settled once the stream ended (just after `[DONE]` left): the next request sees the
    # true count, not the estimate.
    time.sleep(0.05)
    after = ask(server, "sk-a", max_tokens=1)
    assert after.headers["x-ratelimit-remaining-tokens"] == str(
        100 - usage[0].total_tokens - (estimate - 59)
    )
