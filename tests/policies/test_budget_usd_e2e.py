"""Dollar budgets end to end: the official openai SDK against a real Turnout in front of
fake upstreams with known usage and priced deployments, its budgets reading an injected
clock. Every figure is exact: the fake answers "echo: hello world" (2 prompt and 3
completion tokens by its count), and a deployment costs 1 (prompt) and 2 (completion)
dollars per million tokens: 1,000 and 2,000 nano-dollars a token."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import openai
import pytest

from policies.token_estimate import estimate_parts
from tests.fakes.openai_upstream import CutStream, FakeOpenAIUpstream, Ok
from tests.manual_clock import ManualClock
from tests.turnout_server import RunningTurnout, simple_config

StartTurnout = Callable[..., RunningTurnout]
KEY = "sk-dollars"
MESSAGES: list[Any] = [{"role": "user", "content": "hello world"}]
PRICE = {"prompt": 1.0, "completion": 2.0}  # USD per million tokens
DEARER = {"prompt": 3.0, "completion": 5.0}
MAX_TOKENS = 10


def nanos(price: dict[str, float], prompt: int, completion: int) -> int:
    per_token = {k: round(v * 1000) for k, v in price.items()}  # nano-dollars a token
    return prompt * per_token["prompt"] + completion * per_token["completion"]


PROMPT_ESTIMATE, _ = estimate_parts({"messages": MESSAGES, "max_tokens": MAX_TOKENS})
ESTIMATE = nanos(PRICE, PROMPT_ESTIMATE, MAX_TOKENS)  # what one request reserves
REAL = nanos(PRICE, 2, 3)  # what it costs: 8,000 nano-dollars


def usd(amount: int) -> float:
    return amount / 1e9


def header_nanos(response: Any, name: str) -> int:
    return int(Decimal(response.headers[name]) * 10**9)


def priced_config(upstream: FakeOpenAIUpstream, **overrides: Any) -> dict[str, Any]:
    config = simple_config({"a": upstream.base_url}, **overrides)
    config["models"]["m"]["deployments"][0]["price"] = PRICE
    return config


def ask(server: RunningTurnout, key: str = KEY, **kwargs: Any) -> Any:
    kwargs.setdefault("max_tokens", MAX_TOKENS)
    with server.client(key) as client:
        return client.chat.completions.with_raw_response.create(
            model="m", messages=MESSAGES, **kwargs
        )


def spent(server: RunningTurnout, key: str = KEY, **kwargs: Any) -> openai.RateLimitError:
    with pytest.raises(openai.RateLimitError) as caught:
        ask(server, key, **kwargs)
    error = caught.value
    assert error.code == "budget_exceeded"
    assert error.type == "insufficient_quota"
    return error


def message_of(error: openai.APIStatusError) -> str:
    assert isinstance(error.body, dict)
    return str(error.body["message"])


def chat_calls(upstream: FakeOpenAIUpstream) -> int:
    return sum(r.path == "/v1/chat/completions" for r in upstream.requests)


def test_a_key_budget_refuses_the_request_that_would_exceed_it_until_the_period_ends(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    """Two requests cost 2 * REAL; a third's estimate no longer fits what is left."""
    budget = 2 * REAL + ESTIMATE - 1
    clock = ManualClock()  # noon: the day's budget resets in 12 hours
    limits = {"budget_usd": {"per": "day", "usd": usd(budget)}}
    server = turnout(priced_config(upstream, keys=[{"key": KEY, "limits": limits}]), clock)

    first = ask(server)
    assert header_nanos(first, "x-ratelimit-limit-usd") == budget
    assert header_nanos(first, "x-ratelimit-remaining-usd") == budget - ESTIMATE
    assert first.headers["x-ratelimit-reset-usd"] == "12h0m0s"
    assert "x-ratelimit-limit-tokens" not in first.headers  # dollars are not tokens
    second = ask(server)  # admitted only because the first settled on its real cost
    assert header_nanos(second, "x-ratelimit-remaining-usd") == budget - REAL - ESTIMATE

    error = spent(server)
    assert error.status_code == 429
    assert error.response.headers["retry-after"] == str(12 * 3600)
    assert header_nanos(error.response, "x-ratelimit-limit-usd") == budget
    assert header_nanos(error.response, "x-ratelimit-remaining-usd") == budget - 2 * REAL
    assert error.response.headers["x-ratelimit-reset-usd"] == "12h0m0s"
    message = message_of(error)
    assert f"dollar budget of ${Decimal(budget) / 10**9} per day for this key" in message
    assert "resets in 12h0m0s" in message
    assert chat_calls(upstream) == 2  # a refused request never reaches a backend

    clock.advance(12 * 3600)  # the next day starts from nothing
    assert header_nanos(ask(server), "x-ratelimit-remaining-usd") == budget - ESTIMATE


def test_the_estimate_is_corrected_to_the_real_cost(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    """Each request reserves ESTIMATE and settles on REAL, far less: with room for one
    estimate and three real costs, exactly four requests are admitted, not one."""
    assert ESTIMATE > 2 * REAL  # without settlement, a second request would not fit
    budget = ESTIMATE + 3 * REAL
    limits = {"budget_usd": {"per": "month", "usd": usd(budget)}}
    server = turnout(priced_config(upstream, keys=[{"key": KEY, "limits": limits}]), ManualClock())
    for done in range(4):
        reply = ask(server)
        assert header_nanos(reply, "x-ratelimit-remaining-usd") == budget - done * REAL - ESTIMATE
    spent(server)
    assert chat_calls(upstream) == 4


@pytest.mark.parametrize(
    ("where", "owner"),
    [("team", "this team"), ("team_keys", "this key"), ("model", "model `m`")],
)
def test_team_key_and_model_budgets_each_refuse(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, where: str, owner: str
) -> None:
    budget = REAL + ESTIMATE - 1  # one request, then no room for another's estimate
    limits = {"budget_usd": {"per": "week", "usd": usd(budget)}}
    team: dict[str, Any] = {"keys": [KEY, "sk-other"]}
    if where == "team":
        team["limits"] = limits
    elif where == "team_keys":
        team["key_limits"] = limits
    config = priced_config(upstream, teams={"research": team})
    if where == "model":
        config["models"]["m"]["limits"] = limits
    server = turnout(config, ManualClock())  # Monday noon: the week resets in 6.5 days

    ask(server)
    error = spent(server)
    assert f"per week for {owner}" in message_of(error)
    assert error.response.headers["retry-after"] == str(6 * 86400 + 12 * 3600)
    assert "sk-" not in message_of(error)
    assert "research" not in message_of(error)  # the team is "this team", never named
    # The other key of the team: held by the team's and the model's budget, not by a key's.
    if where == "team_keys":
        ask(server, "sk-other")
    else:
        spent(server, "sk-other")


def test_a_model_budget_is_every_callers(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    """A model's budget counts the requests routed to it from every key, and only those."""
    budget = REAL + ESTIMATE - 1
    config = priced_config(upstream, keys=[{"key": KEY}, {"key": "sk-two"}], models=None)
    config["models"]["other"] = {
        "deployments": [{"provider": "a", "model": "other-model", "price": PRICE}]
    }
    config["models"]["m"]["limits"] = {"budget_usd": {"per": "day", "usd": usd(budget)}}
    server = turnout(config, ManualClock())
    ask(server, KEY)
    spent(server, "sk-two")
    with server.client("sk-two") as client:  # another model: not this budget's
        reply = client.chat.completions.create(
            model="other", messages=MESSAGES, max_tokens=MAX_TOKENS
        )
    assert reply.choices[0].message.content == "echo: hello world"


def test_a_model_token_budget_is_held_too(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    """`models.<m>.limits` takes `budget_tokens` as well: 5 tokens a request."""
    estimate = PROMPT_ESTIMATE + MAX_TOKENS
    config = priced_config(upstream, keys=[{"key": KEY}])
    config["models"]["m"]["limits"] = {"budget_tokens": {"per": "day", "tokens": estimate + 4}}
    server = turnout(config, ManualClock())
    first = ask(server)
    assert first.headers["x-ratelimit-remaining-tokens"] == "4"
    with pytest.raises(openai.RateLimitError) as caught:
        ask(server)
    assert caught.value.code == "rate_limit_exceeded"
    assert "Token budget" in message_of(caught.value)


def test_an_estimate_over_the_whole_budget_is_too_large(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream
) -> None:
    budget = ESTIMATE - 1
    limits = {"budget_usd": {"per": "day", "usd": usd(budget)}}
    server = turnout(priced_config(upstream, keys=[{"key": KEY, "limits": limits}]), ManualClock())
    error = spent(server)
    assert "retry-after" not in error.response.headers  # no wait would let it in
    message = message_of(error)
    assert message.startswith("Request too large for the dollar budget")
    assert f"estimated cost is ${Decimal(ESTIMATE) / 10**9}" in message
    assert chat_calls(upstream) == 0
    assert ask(server, max_tokens=1).parse().choices  # a smaller request fits


def test_a_failover_is_charged_for_every_billed_attempt_at_its_own_price(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    """a (cheaper) breaks mid-answer: billed, at its estimate, since it reported no usage;
    b (dearer) answers. Admission reserved the dearer price: the plan may reach b."""
    budget = 10**9
    config = simple_config(
        {"a": upstream.base_url, "b": upstream_b.base_url},
        keys=[{"key": KEY, "limits": {"budget_usd": {"per": "day", "usd": 1}}}],
        retry={"attempts": 1},
    )
    config["models"]["m"]["deployments"][0]["price"] = PRICE
    config["models"]["m"]["deployments"][1]["price"] = DEARER
    upstream.enqueue(CutStream())
    server = turnout(config, ManualClock())
    dearest = nanos(DEARER, PROMPT_ESTIMATE, MAX_TOKENS)

    reply = ask(server)
    assert reply.headers["x-turnout-deployment"] == "b/b-model"
    assert header_nanos(reply, "x-ratelimit-remaining-usd") == budget - dearest
    probe = ask(server)  # reserves `dearest` too: what is left says what the first cost
    cost = budget - dearest - header_nanos(probe, "x-ratelimit-remaining-usd")
    assert cost == ESTIMATE + nanos(DEARER, 2, 3)


def test_a_hedge_and_the_loser_it_cut_are_both_charged(
    turnout: StartTurnout, upstream: FakeOpenAIUpstream, upstream_b: FakeOpenAIUpstream
) -> None:
    """a's stream is late, b is called beside it (the hedge) and wins; a, cut once sent,
    is billed at its estimate."""
    budget = 10**9
    config = simple_config(
        {"a": upstream.base_url, "b": upstream_b.base_url},
        keys=[{"key": KEY, "limits": {"budget_usd": {"per": "day", "usd": 1}}}],
        hedge={"after": 0.2},
    )
    config["models"]["m"]["deployments"][0]["price"] = PRICE
    config["models"]["m"]["deployments"][1]["price"] = PRICE
    upstream.enqueue(Ok(first_delay=30))
    server = turnout(config, ManualClock())
    with server.client(KEY) as client:
        chunks = list(
            client.chat.completions.create(
                model="m",
                messages=MESSAGES,
                max_tokens=MAX_TOKENS,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "echo: hello world"
    )
    assert chat_calls(upstream_b) == 1
    upstream.wait_for_client_closes(1)
    probe = ask(server)
    cost = budget - ESTIMATE - header_nanos(probe, "x-ratelimit-remaining-usd")
    assert cost == REAL + ESTIMATE


@pytest.mark.parametrize(("budget", "hedged"), [(ESTIMATE + 1, 0), (2 * ESTIMATE, 1)])
def test_a_hedge_starts_only_when_the_budget_covers_both_calls(
    turnout: StartTurnout,
    upstream: FakeOpenAIUpstream,
    upstream_b: FakeOpenAIUpstream,
    budget: int,
    hedged: int,
) -> None:
    """Room for one call's estimate, not two at once: the late stream is left to finish;
    room for both: the hedge is called."""
    config = simple_config(
        {"a": upstream.base_url, "b": upstream_b.base_url},
        keys=[{"key": KEY, "limits": {"budget_usd": {"per": "day", "usd": usd(budget)}}}],
        hedge={"after": 0.2},
    )
    for deployment in config["models"]["m"]["deployments"]:
        deployment["price"] = PRICE
    upstream.enqueue(Ok(first_delay=0.6))
    server = turnout(config, ManualClock())
    with server.client(KEY) as client:
        stream = client.chat.completions.create(
            model="m", messages=MESSAGES, max_tokens=MAX_TOKENS, stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "echo: hello world"
    assert chat_calls(upstream_b) == hedged
