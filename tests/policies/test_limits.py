"""The pure parts of the limits policy: OpenAI's reset durations (policies/limit_responses.py),
budget periods in UTC (policies/limit_set.py) and the token estimate a request reserves
before its usage is known (policies/token_estimate.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from policies.limit_responses import duration
from policies.limit_set import period_end, period_start
from policies.policy_config import BudgetSettings
from policies.token_estimate import estimate_tokens


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> float:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0ms"),
        (0.0201, "21ms"),  # rounded up: never tells a client to come back too early
        (0.999, "999ms"),
        (1.0, "1s"),
        (1.2, "2s"),
        (59.0, "59s"),
        (60.0, "1m0s"),
        (360.0, "6m0s"),
        (3723.0, "1h2m3s"),
        (86400.0, "24h0m0s"),
        (-1.0, "0ms"),
    ],
)
def test_duration_is_openais_reset_format(seconds: float, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize(
    ("per", "now", "start", "end"),
    [
        ("hour", at(2024, 1, 15, 12, 30, 5), at(2024, 1, 15, 12), at(2024, 1, 15, 13)),
        ("day", at(2024, 1, 15, 23, 59, 59), at(2024, 1, 15), at(2024, 1, 16)),
        ("day", at(2024, 1, 16), at(2024, 1, 16), at(2024, 1, 17)),  # the boundary is new
        ("week", at(2024, 1, 17, 8), at(2024, 1, 15), at(2024, 1, 22)),  # Monday to Monday
        ("month", at(2024, 2, 29, 23), at(2024, 2, 1), at(2024, 3, 1)),  # leap year
        ("month", at(2024, 12, 31, 23), at(2024, 12, 1), at(2025, 1, 1)),  # year end
    ],
)
def test_budget_periods_are_calendar_periods_in_utc(
    per: str, now: float, start: float, end: float
) -> None:
    budget = BudgetSettings.model_validate({"per": per, "tokens": 1})
    assert period_start(budget, now) == start
    assert period_end(budget, now) == end


@pytest.mark.parametrize(
    ("body", "tokens"),
    [
        # "user" + "hi there": 12 characters → 3 tokens; a chat without max_tokens
        # reserves 256 for the answer.
        ({"model": "m", "messages": [{"role": "user", "content": "hi there"}]}, 3 + 256),
        ({"messages": [{"role": "user", "content": "hi there"}], "max_tokens": 10}, 13),
        ({"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 7}, 9),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "n": 3}, 17),
        ({"prompt": "abcdefgh"}, 2 + 16),  # completions default to 16 tokens
        ({"prompt": [1, 2, 3], "max_tokens": 4, "best_of": 2}, 3 + 8),  # token ids count 1
        ({"input": ["abcd", "efgh"]}, 2),  # embeddings: the input only
    ],
)
def test_estimate_tokens(body: dict[str, Any], tokens: int) -> None:
    assert estimate_tokens(body) == tokens
