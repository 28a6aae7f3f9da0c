"""One dollar budget shared by two Turnout processes through Redis: what one spent, the
other sees, and the request that would exceed the budget is refused wherever it lands.
Two real `turnout serve` processes, one real Redis, the official openai SDK."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import openai
import pytest

from tests.fakes.openai_upstream import FakeOpenAIUpstream
from tests.policies.test_budget_usd_e2e import (
    ESTIMATE,
    MESSAGES,
    PRICE,
    REAL,
    header_nanos,
    usd,
)
from tests.redis_server import redis_url as redis_url
from tests.served import ServedTurnout, free_port, served_turnout
from tests.turnout_server import simple_config

KEY = "sk-shared-dollars"


@pytest.fixture
def two_turnouts(
    tmp_path: Path, upstream: FakeOpenAIUpstream, redis_url: str
) -> Iterator[tuple[ServedTurnout, ServedTurnout]]:
    budget = 2 * REAL + ESTIMATE - 1  # two requests, then no room for a third's estimate
    config = simple_config(
        {"a": upstream.base_url},
        keys=[{"key": KEY, "limits": {"budget_usd": {"per": "month", "usd": usd(budget)}}}],
        # A prefix of its own: the session's Redis is shared with other tests.
        state={"redis_url": redis_url, "prefix": f"turnout-dollars-{free_port()}:"},
        storage={"single_replica": True},
    )
    config["models"]["m"]["deployments"][0]["price"] = PRICE
    with ExitStack() as stack:
        first, second = (
            stack.enter_context(served_turnout(tmp_path / f"{name}.yaml", config))
            for name in ("one", "two")
        )
        yield first, second


def ask(served: ServedTurnout) -> Any:
    with openai.OpenAI(base_url=f"{served.url}/v1", api_key=KEY, max_retries=0) as client:
        return client.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, max_tokens=10
        )


def test_the_request_that_would_exceed_a_shared_budget_is_refused_on_the_other_process(
    two_turnouts: tuple[ServedTurnout, ServedTurnout],
) -> None:
    one, two = two_turnouts
    budget = 2 * REAL + ESTIMATE - 1
    first = ask(one)
    assert header_nanos(first, "x-ratelimit-remaining-usd") == budget - ESTIMATE
    second = ask(two)  # sees what the first process's request really cost
    assert header_nanos(second, "x-ratelimit-remaining-usd") == budget - REAL - ESTIMATE
    with pytest.raises(openai.RateLimitError) as caught:
        ask(one)
    assert caught.value.code == "budget_exceeded"
    assert header_nanos(caught.value.response, "x-ratelimit-remaining-usd") == budget - 2 * REAL
    assert int(caught.value.response.headers["retry-after"]) >= 1  # until the month ends
    with pytest.raises(openai.RateLimitError):
        ask(two)
